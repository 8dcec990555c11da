"""What a run is made of, built from its config: the real data, its augmentation, the teacher,
the student backbone and the context a method is built with.

The trainer builds its run here and then only loops; whatever needs a run's parts without
its loop (a test, a study) builds them here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from squeeze_span.config import TrainingConfig
from squeeze_span.data import BatchAugmentation, ImageDataset, augmentation_for, dataset_info, load_dataset
from squeeze_span.generators import SampleSource, Teacher, TeacherPool, load_generator
from squeeze_span.methods.base import MethodContext
from squeeze_span.models import ResNet, build_backbone
from squeeze_span.train.distributed import gather_with_grad


@dataclass
class RunParts:
    """A run's parts, before any method is built on them."""

    dataset: ImageDataset  # the real training images (data.split)
    augmentation: BatchAugmentation
    augment_generator: torch.Generator  # draws the augmentation's parameters; checkpointed by the trainer
    teacher: SampleSource | None  # None: the run has no teacher.path
    backbone: ResNet  # the student (its method sets its layout); its config records the size of the views it trains on
    context: MethodContext  # what the method is built with, holding the parts above


def build_run(config: TrainingConfig, device: torch.device, rank: int = 0) -> RunParts:
    """The parts of the run ``config`` describes, on ``device``, for process ``rank`` of the run.

    Each rank draws its own augmentations and latents (seeds from ``train.seed`` and the rank).
    The backbone's initial weights come from torch's global generator: seed it first, as the
    trainer does.
    """
    data = config.data
    dataset = load_dataset(data.dataset, data.root, data.split)
    return assemble_run(config, dataset, _build_teacher(config, device, rank), device, rank)


def assemble_run(
    config: TrainingConfig,
    dataset: ImageDataset,
    teacher: SampleSource | None,
    device: torch.device,
    rank: int = 0,
) -> RunParts:
    """The parts of ``config``'s run around a ``dataset`` and a ``teacher`` already at hand.

    :func:`build_run` loads both as the config says; a benchmark passes its own (synthetic
    images where the dataset is absent, one teacher shared by several runs).
    """
    data, train = config.data, config.train
    size = data.image_size or dataset_info(data.dataset).training_size(dataset.image_size[0])
    augmentation = augmentation_for(data.dataset, size, dataset.num_channels)
    augment_generator = torch.Generator(device).manual_seed(train.seed * 7919 + rank)
    backbone = build_backbone(
        config.model.backbone,
        in_channels=dataset.num_channels,
        width=config.model.width,
        zero_init_residual=config.model.zero_init_residual,
        image_size=size,
    )
    context = MethodContext(
        device=device,
        image_channels=dataset.num_channels,
        num_classes=len(dataset.classes),
        augmentation=augmentation,
        generator=augment_generator,
        model=config.model,
        teacher=teacher,
        teacher_path=config.teacher.path,
        gather=gather_with_grad,
    )
    return RunParts(dataset, augmentation, augment_generator, teacher, backbone, context)


def build_teacher(config: TrainingConfig, generator: nn.Module, device: torch.device, rank: int = 0) -> Teacher:
    """A Teacher rendering ``generator`` as ``config.teacher`` says, at the run's precision."""
    teacher = config.teacher
    return Teacher(
        generator,
        teacher.features,
        device=device,
        precision=config.train.precision,
        truncation_psi=teacher.truncation_psi,
        noise_mode=teacher.noise_mode,
        seed=config.train.seed * 104729 + rank,  # each rank draws its own latents
    )


def _build_teacher(config: TrainingConfig, device: torch.device, rank: int = 0) -> SampleSource | None:
    """The run's teacher (a pool of its samples when ``teacher.pool_size`` is set), or None without ``teacher.path``."""
    teacher = config.teacher
    if teacher.path is None:
        return None
    renderer = build_teacher(config, load_generator(teacher.path), device, rank)
    if teacher.pool_size:
        return TeacherPool(renderer, teacher.pool_size, progress=config.train.progress and rank == 0)
    return renderer
