"""StyleGAN2-ADA layers with NVIDIA's module, parameter and buffer names.

Every parameter and buffer has the name and shape of its counterpart in NVIDIA's
``training/networks.py`` (stylegan2-ada-pytorch), so a state dict read from a network pickle
loads with ``load_state_dict(strict=True)``. The code is a clean-room implementation of the
published architecture (StyleGAN2 paper and appendix, ADA paper), not a copy.

Precision: weights and buffers are float32. Under ``torch.autocast`` the convolutions run in
bf16 (CPU or GPU) or fp16 (GPU); the fully connected layers (mapping network, style affines,
discriminator epilogue), the demodulation coefficients and the minibatch standard deviation
always run in float32, like NVIDIA's fp32 parts. NVIDIA's ``use_fp16`` / ``num_fp16_res`` /
``channels_last`` switches are accepted and ignored: precision comes from autocast, and
convolutions run channels_last whenever their input is channels_last (the networks make it so).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from squeeze_span.config import ARCHITECTURES, NOISE_MODES
from squeeze_span.errors import ConfigError
from squeeze_span.generators.stylegan2 import ops

DEFAULT_FILTER = (1, 3, 3, 1)


def _plain(value: Any) -> Any:
    """Nested mappings as plain dicts (EasyDicts and OmegaConf nodes become dict), copied."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return copy.deepcopy(value)


def records_init_kwargs(init: Callable) -> Callable:
    """Store the constructor's explicitly passed arguments as ``self.init_kwargs`` (plain dict).

    Like NVIDIA's persistence, arguments left at their defaults are not recorded, so
    ``type(net)(**net.init_kwargs)`` rebuilds the network and the dict equals the one stored
    in NVIDIA's pickles. Positional arguments are recorded by name.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        recorded: dict[str, Any] = {}
        for name, value in list(bound.arguments.items())[1:]:
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                recorded.update(_plain(value))
            else:
                recorded[name] = _plain(value)
        init(self, *args, **kwargs)
        self.init_kwargs = recorded

    return wrapper


def _fp32_region(x: torch.Tensor) -> torch.autocast:
    """A region where autocast is off: small matmuls that NVIDIA runs in float32 stay float32."""
    return torch.autocast(device_type=x.device.type, enabled=False)


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: ``act(x @ (W * lr / sqrt(in)).T + b * lr)``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        ops.activation_gain(activation)
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _fp32_region(x):
            x = x.to(self.weight.dtype)
            w = self.weight * self.weight_gain
            b = self.bias
            if b is not None and self.bias_gain != 1:
                b = b * self.bias_gain
            if self.activation == "linear" and b is not None:
                return torch.addmm(b.unsqueeze(0), x, w.t())
            return ops.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling, bias, activation, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ops.activation_gain(activation)
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_value) if bias_value is not None else None
        else:
            # Frozen layers keep their tensors as buffers so the state-dict keys stay the same.
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_value)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = ops.conv2d_resample(
            x, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding, flip_weight=(self.up == 1)
        )
        shift = None if self.bias is None else self.bias.reshape(1, -1, 1, 1)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return ops.scale_bias_act(x, None, shift, self.activation, self.act_gain * gain, clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
            f"up={self.up}, down={self.down}"
        )


class MappingNetwork(nn.Module):
    """z (and c) to w: pixel norm, ``num_layers`` dense layers, w_avg tracking, truncation, broadcast.

    ``w_avg`` (an exponential moving average of w with decay ``w_avg_beta``) is updated as in
    stylegan2-ada-pytorch: on every call in training mode unless ``skip_w_avg_update=True``.
    ``update_emas=True/False`` (StyleGAN3's name) forces or forbids the update instead.
    """

    @records_init_kwargs
    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if num_layers < 1:
            raise ConfigError(f"mapping num_layers must be at least 1, got {num_layers}")
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        skip_w_avg_update: bool = False,
        update_emas: bool | None = None,
    ) -> torch.Tensor:
        reference = z if z is not None else c
        if reference is None:
            raise ValueError("MappingNetwork needs z or c")
        with _fp32_region(reference):
            x = None
            if self.z_dim > 0:
                _check_shape("z", z, self.z_dim)
                x = ops.normalize_2nd_moment(z.to(torch.float32))
            if self.c_dim > 0:
                _check_shape("c", c, self.c_dim)
                y = ops.normalize_2nd_moment(self.embed(c.to(torch.float32)))
                x = torch.cat([x, y], dim=1) if x is not None else y
            for idx in range(self.num_layers):
                x = getattr(self, f"fc{idx}")(x)

            update = (self.training and not skip_w_avg_update) if update_emas is None else update_emas
            if update and self.w_avg_beta is not None and self.num_ws is not None:
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

            if self.num_ws is not None:
                x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
            if truncation_psi != 1:
                if self.w_avg_beta is None or self.num_ws is None:
                    raise ValueError("truncation needs w_avg; this mapping network does not track it")
                if truncation_cutoff is None:
                    x = self.w_avg.lerp(x, truncation_psi)
                else:
                    x = x.clone()
                    x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


def _check_shape(name: str, tensor: torch.Tensor | None, dim: int) -> None:
    if tensor is None or tensor.ndim != 2 or tensor.shape[1] != dim:
        got = None if tensor is None else list(tensor.shape)
        raise ValueError(f"{name} must have shape [N, {dim}], got {got}")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling 2x), per-pixel noise, bias, lrelu, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ops.activation_gain(activation)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", gain: float = 1.0) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        return ops.modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=(self.up == 1),
            bias=self.bias,
            activation=self.activation,
            gain=self.act_gain * gain,
            clamp=None if self.conv_clamp is None else self.conv_clamp * gain,
        )

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"resolution={self.resolution}, up={self.up}, activation={self.activation}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation, plus bias and clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        return ops.modulated_conv2d(
            x, self.weight, styles, padding=self.padding, demodulate=False, bias=self.bias, clamp=self.conv_clamp
        )


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: returns the features ``x`` and the running image.

    The first block (``in_channels == 0``) starts from the learned ``const``; later blocks
    upsample with ``conv0``. Architectures: 'orig' (image only from the last block), 'skip'
    (each block's ToRGB output is added to the FIR-upsampled image so far), 'resnet'
    (a 1x1 upsampling skip connection, sum scaled by sqrt(1/2)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ConfigError(f"synthesis architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, **layer_kwargs
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter
            )

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        expected = [self.num_conv + self.num_torgb, self.w_dim]
        if ws.ndim != 3 or list(ws.shape[1:]) != expected:
            raise ValueError(
                f"block b{self.resolution} needs ws of shape [N, {expected[0]}, {expected[1]}], got {list(ws.shape)}"
            )
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = x.contiguous(memory_format=torch.channels_last)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)

        if img is not None:
            with _fp32_region(img):
                img = ops.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter)).to(torch.float32)
            img = y if img is None else img + y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class DiscriminatorBlock(nn.Module):
    """One resolution of the discriminator: two 3x3 convs, the second downsampling 2x.

    'orig' and 'resnet' read the image only in the first block (``fromrgb``); 'skip' reads a
    FIR-downsampled copy of the image in every block. 'resnet' adds a 1x1 downsampling skip
    connection, sum scaled by sqrt(1/2).
    """

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ConfigError(
                f"discriminator architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}"
            )
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.num_layers = 0

        def trainable_next() -> bool:
            layer_idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return layer_idx >= freeze_layers

        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(
                img_channels,
                tmp_channels,
                kernel_size=1,
                activation=activation,
                trainable=trainable_next(),
                conv_clamp=conv_clamp,
            )
        self.conv0 = Conv2dLayer(
            tmp_channels,
            tmp_channels,
            kernel_size=3,
            activation=activation,
            trainable=trainable_next(),
            conv_clamp=conv_clamp,
        )
        self.conv1 = Conv2dLayer(
            tmp_channels,
            out_channels,
            kernel_size=3,
            activation=activation,
            down=2,
            trainable=trainable_next(),
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                down=2,
                trainable=trainable_next(),
                resample_filter=resample_filter,
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.in_channels == 0 or self.architecture == "skip":
            y = self.fromrgb(img)
            x = y if x is None else x + y
            img = ops.downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class MinibatchStdLayer(nn.Module):
    """Appends the mean over features of the standard deviation across a group of samples.

    The batch is split as ``[group_size, N // group_size]``: sample ``i`` belongs to group
    ``i % (N // group_size)`` (for N = 8 and group size 4: samples {0, 2, 4, 6} and
    {1, 3, 5, 7}). ``num_channels`` splits the features into that many parts, one output
    channel each.
    """

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        group = min(self.group_size, batch) if self.group_size is not None else batch
        if batch % group != 0:
            raise ConfigError(
                f"the discriminator's minibatch-stddev group size {group} does not divide the batch size {batch}; "
                f"use a batch size that is a multiple of {group} or change epilogue_kwargs.mbstd_group_size"
            )
        parts = self.num_channels
        y = x.to(torch.float32).reshape(group, -1, parts, channels // parts, height, width)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [N // group, parts]
        y = y.reshape(-1, parts, 1, 1).repeat(group, 1, height, width)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 end of the discriminator: minibatch stddev, conv, fc, out, optional projection on cmap.

    Runs in float32 (autocast off), as NVIDIA's epilogue does.
    """

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(
        self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None, force_fp32: bool = False
    ) -> torch.Tensor:
        with _fp32_region(x):
            x = x.to(torch.float32)
            if self.architecture == "skip":
                x = x + self.fromrgb(img.to(torch.float32))
            if self.mbstd is not None:
                x = self.mbstd(x)
            x = self.conv(x)
            x = self.fc(x.flatten(1))
            x = self.out(x)
            if self.cmap_dim > 0:
                x = (x * cmap.to(torch.float32)).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"
