"""StyleGAN2-ADA Generator, SynthesisNetwork and Discriminator, loadable from NVIDIA's state dicts.

Constructors take NVIDIA's keyword arguments (``z_dim, c_dim, w_dim, img_resolution,
img_channels, mapping_kwargs, synthesis_kwargs`` for G; ``c_dim, img_resolution, img_channels,
architecture, channel_base, channel_max, num_fp16_res, conv_clamp, cmap_dim, block_kwargs,
mapping_kwargs, epilogue_kwargs`` for D) and keep the explicitly passed ones in
``init_kwargs``, so ``Generator(**entry.init_kwargs)`` followed by
``load_state_dict(entry.state_dict, strict=True)`` rebuilds a network from a pickle.

Calls are NVIDIA's: ``G(z, c, truncation_psi, truncation_cutoff, noise_mode)``,
``G.mapping(z, c, ...)``, ``G.synthesis(ws, noise_mode=...)``, ``D(img, c)`` -> logits
``[N, 1]``. Each synthesis block ``G.synthesis.b{res}`` returns ``(x, img)``, so forward hooks
on it see the features. One difference: ``noise_mode`` defaults to ``'const'`` here (NVIDIA:
``'random'``), because this project uses G as a fixed teacher, where a deterministic image per
latent is what one wants; pass ``noise_mode='random'`` for NVIDIA's behaviour.

Precision and speed: float32 by default, matching NVIDIA's float32 outputs on the
``tiny_uncond`` fixture within 1e-5 (images, block features, D logits; tested at
atol = rtol = 1e-4). Under ``torch.autocast('cpu', dtype=torch.bfloat16)`` the convolutions run
in bf16 channels_last (same code, only the dtype differs) while the mapping network, style
affines, demodulation coefficients and D epilogue stay float32. On that fixture bf16 moves the
image by at most 0.089 absolute (values up to 7.9: 1.1% of the range), each block's features by
at most 0.7-1.2% of that block's max, and the D logits by at most 0.0043 (tested with ~2x
headroom). fp16 is meant for GPU autocast: weights and styles are pre-scaled so the
convolution cannot overflow (tested with float16 tensors on CPU; the GPU test skips without a
GPU). Throughput on a 2-core CPU: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from squeeze_span.errors import ConfigError
from squeeze_span.generators.stylegan2.layers import (
    DiscriminatorBlock,
    DiscriminatorEpilogue,
    MappingNetwork,
    SynthesisBlock,
    records_init_kwargs,
)


def _log2_resolution(img_resolution: int) -> int:
    log2 = round(math.log2(img_resolution)) if img_resolution > 0 else 0
    if img_resolution < 4 or 2**log2 != img_resolution:
        raise ConfigError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return log2


class SynthesisNetwork(nn.Module):
    """ws ``[N, num_ws, w_dim]`` to an image, through blocks ``b4, b8, ..., b{img_resolution}``.

    Channels at resolution r: ``min(channel_base // r, channel_max)``. Block r consumes
    ``num_conv + num_torgb`` consecutive rows of ws starting at the sum of earlier blocks'
    ``num_conv`` (the ToRGB of one block shares its row with the next block's first conv).
    """

    @records_init_kwargs
    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        log2 = _log2_resolution(img_resolution)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        # Kept for reference only: precision comes from autocast, not from per-block fp16.
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(
                in_channels,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=(res >= fp16_resolution),
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", **block_kwargs: Any) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, **block_kwargs)
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z, c -> ws) then ``synthesis`` (ws -> image in ~[-1, 1])."""

    @records_init_kwargs
    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None,
        synthesis_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **dict(synthesis_kwargs or {})
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **dict(mapping_kwargs or {})
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        **synthesis_kwargs: Any,
    ) -> torch.Tensor:
        mapping_kwargs = {
            k: synthesis_kwargs.pop(k) for k in ("skip_w_avg_update", "update_emas") if k in synthesis_kwargs
        }
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, **mapping_kwargs)
        return self.synthesis(ws, noise_mode=noise_mode, **synthesis_kwargs)


CIFAR10_G_KWARGS: dict[str, Any] = {
    "z_dim": 512,
    "c_dim": 0,
    "w_dim": 512,
    "img_resolution": 32,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "synthesis_kwargs": {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256},
}
"""The paper's CIFAR-10 generator: stylegan2-ada-pytorch's ``--cfg=cifar`` (z = w = 512, 2 mapping layers,
512 channels at every resolution, conv_clamp 256, 'skip', 32x32 RGB; 8.0 GFLOP per image)."""


class Discriminator(nn.Module):
    """StyleGAN2 discriminator: blocks ``b{img_resolution} ... b8``, then the epilogue ``b4``.

    With ``c_dim > 0`` the output is the projection of the features on the label embedding
    ``mapping(c)``: ``(out * cmap).sum(dim=1, keepdim=True) / sqrt(cmap_dim)``.
    """

    @records_init_kwargs
    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict[str, Any] | None = None,
        mapping_kwargs: dict[str, Any] | None = None,
        epilogue_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        log2 = _log2_resolution(img_resolution)
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim
        common = {"img_channels": img_channels, "architecture": architecture, "conv_clamp": conv_clamp}
        layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(
                in_channels,
                channels[res],
                channels[res // 2],
                resolution=res,
                first_layer_idx=layer_idx,
                use_fp16=(res >= fp16_resolution),
                **dict(block_kwargs or {}),
                **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **dict(mapping_kwargs or {})
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4], cmap_dim=cmap_dim, resolution=4, **dict(epilogue_kwargs or {}), **common
        )

    def forward(self, img: torch.Tensor, c: torch.Tensor | None, **block_kwargs: Any) -> torch.Tensor:
        expected = [self.img_channels, self.img_resolution, self.img_resolution]
        if img.ndim != 4 or list(img.shape[1:]) != expected:
            raise ValueError(f"img must have shape [N, {', '.join(map(str, expected))}], got {list(img.shape)}")
        img = img.contiguous(memory_format=torch.channels_last)
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, cmap_dim={self.cmap_dim}"
