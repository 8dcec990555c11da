"""Datasets in their real on-disk formats, and batched augmentation on the device."""

from squeeze_span.data.augment import (
    BatchAugmentation,
    augmentation_for,
    center_view,
    gan_view,
    match_channels,
    normalization_stats,
    pad_centered,
    to_unit_range,
)
from squeeze_span.data.datasets import (
    DATASET_INFO,
    DATASETS,
    DatasetInfo,
    ImageDataset,
    dataset_info,
    load_dataset,
    split_validation,
)
from squeeze_span.errors import DatasetError

__all__ = [
    "DATASETS",
    "DATASET_INFO",
    "BatchAugmentation",
    "DatasetError",
    "DatasetInfo",
    "ImageDataset",
    "augmentation_for",
    "center_view",
    "dataset_info",
    "gan_view",
    "load_dataset",
    "match_channels",
    "normalization_stats",
    "pad_centered",
    "split_validation",
    "to_unit_range",
]
