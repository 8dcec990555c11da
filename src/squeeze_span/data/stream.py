"""An endless stream of real-image batches, as index tensors over images kept on the device.

Each epoch is a fresh permutation drawn from ``(seed, epoch)`` alone, so the stream's
whole state is two integers (``epoch``, ``position``): a checkpoint restores it exactly.
Under DDP every rank draws the same permutation and takes its own contiguous slice of
each global batch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from squeeze_span.data.datasets import ImageDataset

# Keep the images on the device as one uint8 tensor below this size; above it, gather each
# batch from the (possibly memory-mapped) arrays and copy it over.
ON_DEVICE_LIMIT_BYTES = 4 * 2**30


class RealBatch(NamedTuple):
    images: torch.Tensor  # uint8 [B, C, H, W] on the device
    labels: torch.Tensor  # int64 [B] on the device, -1 where there is none


class RealBatchStream:
    def __init__(
        self,
        dataset: ImageDataset,
        device: torch.device,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        on_device: bool = True,
    ) -> None:
        self.dataset = dataset
        self.device = device
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0
        images = getattr(dataset, "images", None)
        fits = isinstance(images, np.ndarray) and images.nbytes <= ON_DEVICE_LIMIT_BYTES
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device) if on_device and fits else None
        self.labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64, device=device)
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=generator)

    def next(self, global_batch_size: int) -> RealBatch:
        """This rank's images [global_batch_size / world_size, C, H, W] and labels, on the device.

        An epoch ends when fewer than ``global_batch_size`` images are left; the rest
        are skipped, as a drop-last loader does.
        """
        if global_batch_size == 0:
            empty = torch.empty(0, *self.dataset[0][0].shape, dtype=torch.uint8, device=self.device)
            return RealBatch(empty, self.labels[:0])
        if global_batch_size > len(self.dataset):
            raise ValueError(
                f"a batch of {global_batch_size} real images is larger than the dataset ({len(self.dataset)})"
            )
        if self.position + global_batch_size > len(self.dataset):
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        batch = self._order[self.position : self.position + global_batch_size]
        self.position += global_batch_size
        local = batch.chunk(self.world_size)[self.rank].to(self.device)
        if self.images is not None:
            images = self.images[local]
        else:
            images = self.dataset.get_batch(local.cpu())[0].to(self.device, non_blocking=True)
        return RealBatch(images, self.labels[local])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)
