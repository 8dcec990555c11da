"""Batch normalization over the global batch of all ranks, on any device.

torch's ``nn.SyncBatchNorm`` runs on GPUs only; this one also runs on CPUs (gloo). It
all-reduces each channel's sum, sum of squares and count, with autograd, so that N
ranks of B/N images normalize exactly as one process of B images would.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class CrossRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d whose training statistics cover every rank's batch (eval mode: running stats)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D, 3D or 4D input, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / x.shape[1], device=x.device)
        totals = all_reduce(torch.cat([x.sum(dims), x.square().sum(dims), count]))
        channels = x.shape[1]
        total = totals[-1]
        mean = totals[:channels] / total
        var = (totals[channels : 2 * channels] / total - mean.square()).clamp_min(0.0)
        if self.track_running_stats:
            self._update_running_stats(mean, var, total)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, total: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        unbiased = var * total / (total - 1).clamp_min(1.0)  # as F.batch_norm stores it
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm in ``module`` normalizes over the global batch: torch's kernel on GPUs, ours elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CrossRankBatchNorm):
        converted = CrossRankBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        converted.load_state_dict(module.state_dict())
        return converted.to(next(iter(module.buffers()), torch.empty(0)).device)
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module
