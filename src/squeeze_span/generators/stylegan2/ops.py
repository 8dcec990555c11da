"""Low-level operations of StyleGAN2 in pure PyTorch: FIR filters, upfirdn2d, bias + activation,
convolution with resampling, and the modulated convolution.

Written from the published formulas (Karras et al., "Analyzing and Improving the Image Quality
of StyleGAN", CVPR 2020, section 2.2 and appendix B; "Training Generative Adversarial Networks
with Limited Data", NeurIPS 2020) and checked numerically against outputs of NVIDIA's reference
implementation (tests/generators/test_stylegan2.py). No custom kernels and no build step: every
op is a standard torch op, so CPU, CUDA, autocast (bf16 or fp16) and autograd all work.

Conventions kept from NVIDIA so that pretrained weights give the same numbers:

- A FIR filter given as 1-D taps ``[1, 3, 3, 1]`` becomes the 2-D outer product, normalised
  to sum 1 (a 4x4 ``resample_filter`` buffer); 1-D filters of 8 or more taps stay separable.
- ``upfirdn2d`` = insert ``up - 1`` zeros between samples, pad (negative pads crop), convolve
  with the filter (a true convolution, i.e. the filter is flipped unless ``flip_filter``),
  keep every ``down``-th sample. Upsampling multiplies the filter by ``up**2`` to keep the
  signal's mean.
- Convolution with ``up=2``: a stride-2 transposed convolution followed by the FIR filter;
  with ``down=2``: the FIR filter followed by a stride-2 convolution. The flops are those of
  the convolution at the lower resolution, the filter being a cheap depthwise op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Activation name -> (function of (x, alpha), default alpha, default gain). The gains keep the
# signal's second moment roughly constant through the layer (He init), as in NVIDIA's bias_act.
_ACTIVATIONS = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": (lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}

# Activations with act(g * x) == g * act(x) for g > 0: their gain can be folded into the
# preceding affine map, which saves one full pass over the activations.
_POSITIVELY_HOMOGENEOUS = ("linear", "relu", "lrelu")


def activation_gain(activation: str) -> float:
    """The default gain NVIDIA applies after ``activation`` (sqrt(2) for relu-like, else 1)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[activation][2]


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    x, y = value
    return int(x), int(y)


def _padding4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """``padding`` as (x0, x1, y0, y1); an int pads all sides, a pair is (x, y)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def setup_filter(
    f: Sequence[float] | torch.Tensor | None,
    device: torch.device | str | None = None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1.0,
    separable: bool | None = None,
) -> torch.Tensor:
    """The float32 FIR filter tensor that ``upfirdn2d`` expects.

    ``[1, 3, 3, 1]`` gives the 4x4 outer product divided by its sum (64). 1-D filters of 8 or
    more taps stay 1-D (separable). ``gain`` multiplies the 2-D filter's sum.
    """
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32, device=device)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"a FIR filter must be a non-empty 1-D or 2-D array, got shape {list(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def _depthwise_filter(
    x: torch.Tensor, f: torch.Tensor, gain: float, flip_filter: bool, padding: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """Filter every channel of ``x`` with ``f`` (true convolution), as one grouped conv2d."""
    channels = x.shape[1]
    f = f * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f.to(x.dtype)
    px, py = padding
    sx, sy = stride
    if f.ndim == 2:
        weight = f[None, None].expand(channels, 1, *f.shape)
        return F.conv2d(x, weight, padding=(py, px), stride=(sy, sx), groups=channels)
    weight_x = f[None, None, None, :].expand(channels, 1, 1, f.numel())
    weight_y = f[None, None, :, None].expand(channels, 1, f.numel(), 1)
    x = F.conv2d(x, weight_x, padding=(0, px), stride=(1, sx), groups=channels)
    return F.conv2d(x, weight_y, padding=(py, 0), stride=(sy, 1), groups=channels)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample a batch of images ``[N, C, H, W]``.

    Output size along x: ``(W * up + px0 + px1 - fw) // down + 1``. Negative padding crops.
    Without upsampling and with equal non-negative padding on both sides of an axis, this runs
    as one strided depthwise convolution (the form every hot path of the networks takes);
    otherwise as the literal definition.
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _padding4(padding)
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [N, C, H, W], got shape {list(x.shape)}")

    if upx == 1 and upy == 1 and px0 == px1 >= 0 and py0 == py1 >= 0:
        return _depthwise_filter(x, f, gain, flip_filter, (px0, py0), (downx, downy))

    batch, channels, height, width = x.shape
    if upx > 1 or upy > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(batch, channels, height * upy, width * upx)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    return _depthwise_filter(x, f, gain, flip_filter, (0, 0), (downx, downy))


def upsample2d(
    x: torch.Tensor, f: torch.Tensor | None, up: int = 2, padding: int = 0, flip_filter: bool = False, gain: float = 1.0
) -> torch.Tensor:
    """Upsample by ``up`` with the FIR filter ``f``; the output is exactly ``up`` times larger."""
    fw, fh = _filter_size(f)
    upx, upy = _pair(up)
    px0, px1, py0, py1 = _padding4(padding)
    pad = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: int = 2,
    padding: int = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Downsample by ``down`` with the FIR filter ``f``; the output is exactly ``down`` times smaller."""
    fw, fh = _filter_size(f)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _padding4(padding)
    pad = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """``clamp(act(x + b) * gain, -clamp, clamp)``, with ``b`` broadcast along ``dim``.

    ``gain`` defaults to the activation's own gain (:func:`activation_gain`); ``alpha`` is the
    leaky-ReLU slope (0.2 by default).
    """
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(_ACTIVATIONS)}")
    func, default_alpha, default_gain = _ACTIVATIONS[act]
    alpha = default_alpha if alpha is None else float(alpha)
    gain = default_gain if gain is None else float(gain)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _grad_free(x: torch.Tensor) -> bool:
    """In-place ops are safe on ``x`` when autograd will not need its old value."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def scale_bias_act(
    x: torch.Tensor,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    act: str,
    gain: float,
    clamp: float | None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """``clamp(act(x * scale + shift + noise) * gain, -clamp, clamp)`` in as few passes over ``x`` as possible.

    ``scale`` (per-sample-channel demodulation coefficients, ``[N, C, 1, 1]``), ``shift`` (the
    bias, ``[1, C, 1, 1]``) and ``noise`` (``[N or 1, 1, H, W]``) broadcast against ``x`` and stay
    that small: none of them is expanded to ``x``'s size, which would cost a float32 pass over
    memory for each (the time outside the convolutions is memory traffic). For relu-like
    activations the gain is folded into them, so ``x`` sees one fused multiply-add, one in-place
    add of the noise and one in-place activation.
    """
    func, alpha, _ = _ACTIVATIONS[act]
    x_gain = 1.0  # a scalar factor on x when there is no scale tensor to fold the gain into
    if act in _POSITIVELY_HOMOGENEOUS and gain > 0:
        if scale is not None:
            scale = scale * gain
        else:
            x_gain = gain
        shift = None if shift is None else shift * gain
        noise = None if noise is None else noise * gain
        gain = 1.0
    scale, shift, noise = (None if t is None else t.to(x.dtype) for t in (scale, shift, noise))
    fresh = True  # x is a new tensor of this function's, so in-place ops cannot touch the caller's
    if scale is not None and shift is not None:
        x = torch.addcmul(shift, x, scale)
    elif scale is not None:
        x = x * scale
    elif shift is not None:
        x = torch.add(shift, x, alpha=x_gain) if x_gain != 1 else x + shift
    elif x_gain != 1:
        x = x * x_gain
    else:
        fresh = False
    if noise is not None:
        x = x.add_(noise) if fresh and _grad_free(x) else x + noise
        fresh = True
    inplace = fresh and _grad_free(x)
    if act == "lrelu":
        x = F.leaky_relu(x, alpha, inplace=inplace)
    elif act == "relu":
        x = F.relu(x, inplace=inplace)
    else:
        x = func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


def _outer_product_conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution of a one-channel ``x`` (D's fromrgb on grayscale images): an outer product.

    oneDNN runs this shape as a slow special case (16 ms for 32 x 1 x 32 x 32 -> 128 channels on
    two cores); as a broadcast multiply in [N, H, W, C] it is one pass over the output, which
    comes out channels_last. Under autocast it computes in the autocast dtype, as the conv would.
    """
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, w = x.to(dtype), w.to(dtype)
    return (x.permute(0, 2, 3, 1) * w.reshape(1, -1)).permute(0, 3, 1, 2)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """2-D convolution with optional FIR up- or downsampling by an integer factor.

    ``w`` is ``[out, in, kh, kw]``. ``flip_weight=True`` is torch's cross-correlation;
    ``False`` flips the kernel (a true convolution). NVIDIA's layers pass
    ``flip_weight=(up == 1)``, so their upsampling layers use the kernel of the stride-2
    transposed convolution as it is.
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample does both up- and downsampling in no StyleGAN2 layer; use one")
    kh, kw = w.shape[2:]
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if up == 1 and down == 1:
        if kh == kw == 1 and x.shape[1] == 1 and px0 == px1 == py0 == py1 == 0:
            return _outer_product_conv(x, w)
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return F.conv2d(x, w if flip_weight else w.flip([2, 3]), padding=(py0, px0))
        x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
        return F.conv2d(x, w if flip_weight else w.flip([2, 3]))

    if down > 1:
        # Filtering first and convolving with stride 2 costs the conv at the output resolution.
        if kw == 1 and kh == 1:
            x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
            return F.conv2d(x, w if flip_weight else w.flip([2, 3]))
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return F.conv2d(x, w if flip_weight else w.flip([2, 3]), stride=down)

    if kw == 1 and kh == 1:
        x = F.conv2d(x, w if flip_weight else w.flip([2, 3]))
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    # Stride-2 transposed convolution, then the FIR filter on its (2H + k - 2)-sized output.
    px0 -= kw - 1
    px1 -= kw - up
    py0 -= kh - 1
    py1 -= kh - up
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    wt = w.transpose(0, 1)
    if flip_weight:
        wt = wt.flip([2, 3])
    x = F.conv_transpose2d(x, wt, stride=up, padding=(pyt, pxt))
    return upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter)


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``dcoef[n, o] = rsqrt(sum_{i,k} (styles[n, i] * weight[o, i, k])**2 + eps)``, as one matmul.

    Equal to the norm of the per-sample modulated weight (StyleGAN2 eq. 3) without building that
    ``[N, O, I, k, k]`` tensor: ``sum_{i,k} s_i^2 w_oik^2 = (s^2 @ (sum_k w^2).T)[n, o]``.
    """
    weight_sq = weight.float().square().sum(dim=[2, 3])  # [O, I]
    return (styles.float().square() @ weight_sq.t() + eps).rsqrt()


def _runs_in_float16(x: torch.Tensor) -> bool:
    """Whether convolutions on ``x`` will compute in float16 (explicitly or under fp16 autocast)."""
    if x.dtype == torch.float16:
        return True
    device = x.device.type
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    bias: torch.Tensor | None = None,
    activation: str = "linear",
    gain: float = 1.0,
    clamp: float | None = None,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution with its epilogue, as one plain shared-weight convolution.

    Computes ``clamp(act(conv(x, w_n) + noise + bias) * gain, -clamp, clamp)`` where
    ``w_n = weight * styles[n]`` over input channels, divided by its norm per output channel when
    ``demodulate`` (StyleGAN2 eq. 1-3). ``conv(x, weight * s[n, None, :, None, None]) * dcoef[n]``
    equals ``conv(x * s[n, :, None, None], weight) * dcoef[n]``: the modulation scales input
    channels, so it is applied to the activations instead of to a per-sample copy of the
    weights, and one batched convolution with the shared weight serves the whole batch (no
    grouped conv). ``dcoef`` comes from :func:`demodulation_coefficients` (one small matmul, in
    float32), and ``dcoef``, noise, bias, activation, gain and clamp are applied by
    :func:`scale_bias_act` (one fused multiply-add, the noise, activation and clamp in place).

    In float16 the weight and styles are first divided by their max-norms (per output channel
    and per sample), which demodulation cancels exactly, so the convolution cannot overflow;
    NVIDIA does the same. Other dtypes skip this, so float32 follows the plain formula.
    """
    batch = x.shape[0]
    if styles.shape != (batch, weight.shape[1]):
        raise ValueError(f"styles must be [N, in_channels] = {[batch, weight.shape[1]]}, got {list(styles.shape)}")
    if demodulate and _runs_in_float16(x):
        fan_in = weight[0].numel()
        weight = weight * (fan_in**-0.5 / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
    x = conv2d_resample(
        x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight
    )
    with torch.autocast(device_type=x.device.type, enabled=False):
        dcoefs = demodulation_coefficients(weight, styles).reshape(batch, -1, 1, 1) if demodulate else None
    shift = None if bias is None else bias.reshape(1, -1, 1, 1)
    noise = None if noise is None else noise.reshape(-1, 1, *noise.shape[-2:])
    return scale_bias_act(x, dcoefs, shift, activation, gain, clamp, noise=noise)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit mean square along ``dim`` (the pixel norm of the mapping network's input)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
