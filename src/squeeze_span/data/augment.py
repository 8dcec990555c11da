"""The paper's SimCLR/VICReg augmentation, applied to a whole batch on its own device.

Every image gets its own random parameters (the original code drew one crop for
the whole batch), and nothing loops over images in Python. The steps follow
torchvision's semantics, in this order:

1. RandomResizedCrop(size, scale, ratio), bilinear, with antialias when a crop is
   shrunk (torchvision's tensor default).
2. ColorJitter(brightness, contrast, saturation, hue) with probability
   ``jitter_prob``, in the fixed order brightness, contrast, saturation, hue.
3. RandomGrayscale(``grayscale_prob``), ITU-R 601-2 luma, replicated to 3 channels.
4. GaussianBlur(sigma uniform in ``blur_sigma``) with probability ``blur_prob``.
5. RandomHorizontalFlip(``flip_prob``).
6. Normalize(mean, std).

Choices, and why:

* Crop. torchvision tries 10 (area, log-ratio) draws one after the other and
  takes the first box that fits, else a center crop with the ratio clamped into
  range. Here all 10 candidates are drawn at once for every image and the first
  that fits is kept, with the same fallback: the same distribution, without a
  loop. The crop and the resize are one pair of per-image interpolation matrices,
  ``out = rows @ image @ columns^T``: a batched matmul, which runs on AMX (bf16
  under autocast) or tensor cores. The weights are PyTorch's own (bilinear with
  ``align_corners=False``, clamped at the crop's edge; the PIL-style widened
  triangle when shrinking), so a crop equals ``F.interpolate(image[..., box],
  antialias=True)``, and an identity crop is exactly the identity.
* Flip. A horizontal flip commutes with every later step (they act per pixel, or
  with a symmetric kernel and reflect padding), so it is folded into the crop's
  column matrix and costs nothing; the result equals flipping after the blur.
* Color order. torchvision shuffles the four color steps once per call (one order
  for the whole batch, so its images never differ in order either); a fixed order
  keeps the steps branch-free and easy to check against hand formulas. Images left out of
  the jitter get neutral factors (1, 1, 1, 0); hue is additionally selected with
  ``torch.where`` because an HSV round trip is not bit-exact.
* Hue. Through HSV, as torchvision does, not a YIQ rotation: the YIQ rotation is
  a different function (it does not keep max and min of a pixel fixed) and would
  not match torchvision. The HSV -> RGB step uses the closed form
  ``c_n = v - (v - min) * clamp(min(k, 4 - k), 0, 1)`` with
  ``k = (n + 6h) mod 6``, n = 5, 3, 1, which equals torchvision's six-case table
  up to float rounding.
* Blur. Kernel size ``2 * (size // 20) + 1``, the original SimCLR code's 10% of
  the image made odd: 23 at 224, 9 at 96. Each image gets its own separable
  Gaussian (a delta for images left unblurred), applied as a depthwise conv with
  reflect padding, like torchvision. There is no data-dependent indexing, so no
  device sync.
* Randomness. Every parameter is drawn with the passed ``generator`` on the
  generator's own device (the CPU default generator when none is passed), then
  moved to the images' device. So a seed gives the same parameters on CPU and GPU.
* Precision. Under ``torch.autocast`` the crop matmul and the blur conv run in the
  autocast dtype (bf16: fast on AMX); the color steps run in float32 and the
  output is always float32, in the input's memory format (channels_last in,
  channels_last out).
* One-channel images (Fashion-MNIST) get brightness and contrast only: saturation,
  hue and grayscale have no meaning for them, and torchvision skips them too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from squeeze_span.data.datasets import dataset_info
from squeeze_span.errors import ConfigError

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma, as in torchvision's ``rgb_to_grayscale``."""

CROP_CANDIDATES = 10
"""torchvision's number of tries before the center-crop fallback."""


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Real uint8 images (0..255) or generator output (float, about [-1, 1]) as float in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 (0..255) or float in [-1, 1], got {images.dtype}")
    return images.float().clamp(-1.0, 1.0).add_(1.0).mul_(0.5)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(images - mean) / std`` per channel; images are [B, C, H, W] in [0, 1]."""
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} values for {channels}-channel images, got {mean} and {std}")
    mean_tensor = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_tensor) / std_tensor


def _memory_format(images: torch.Tensor) -> torch.memory_format:
    if images.dim() == 4 and images.shape[1] > 1 and images.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def center_view(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The evaluation view: unit range, antialiased bilinear resize to ``size`` if needed, normalize."""
    memory_format = _memory_format(images)
    unit = to_unit_range(images)
    if unit.shape[-2:] != (size, size):
        unit = F.interpolate(unit, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return normalize(unit, mean, std).contiguous(memory_format=memory_format)


@dataclass
class AugmentationParams:
    """Per-image random parameters of one batch; every field has the batch as its first dimension.

    ``crop_box`` holds (top, left, height, width) in input pixels. The color factors are
    torchvision's (multipliers for brightness, contrast and saturation, a shift in turns
    for hue), drawn for every image; only images with ``jitter`` set use them.
    """

    crop_box: torch.Tensor  # [B, 4] int64
    flip: torch.Tensor  # [B] bool
    jitter: torch.Tensor  # [B] bool
    brightness: torch.Tensor  # [B] float
    contrast: torch.Tensor  # [B] float
    saturation: torch.Tensor  # [B] float
    hue: torch.Tensor  # [B] float
    grayscale: torch.Tensor  # [B] bool
    blur: torch.Tensor  # [B] bool
    blur_sigma: torch.Tensor  # [B] float

    def to(self, device: torch.device | str) -> AugmentationParams:
        return AugmentationParams(**{field.name: getattr(self, field.name).to(device) for field in fields(self)})


def _uniform(
    batch_size: int, bounds: tuple[float, float], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    low, high = bounds
    return torch.rand(batch_size, generator=generator, device=device) * (high - low) + low


def _bernoulli(batch_size: int, p: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(batch_size, generator=generator, device=device) < p


def _sample_crop_boxes(
    batch_size: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params, with its 10 tries drawn at once per image."""
    area = height * width
    shape = (batch_size, CROP_CANDIDATES)
    target_area = area * (torch.rand(shape, generator=generator, device=device) * (scale[1] - scale[0]) + scale[0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(torch.rand(shape, generator=generator, device=device) * (log_high - log_low) + log_low)
    crop_width = torch.round(torch.sqrt(target_area * aspect))
    crop_height = torch.round(torch.sqrt(target_area / aspect))
    fits = (crop_width > 0) & (crop_width <= width) & (crop_height > 0) & (crop_height <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    crop_width = crop_width.gather(1, first).squeeze(1).long()
    crop_height = crop_height.gather(1, first).squeeze(1).long()

    # torchvision's fallback: the whole image, cut to the nearest allowed ratio, centered.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_width, fallback_height = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_width, fallback_height = int(round(height * max(ratio))), height
    else:
        fallback_width, fallback_height = width, height
    any_fits = fits.any(dim=1)
    crop_width = torch.where(any_fits, crop_width, fallback_width)
    crop_height = torch.where(any_fits, crop_height, fallback_height)

    # randint(0, n + 1) as floor(u * (n + 1)); the clamp guards u * (n + 1) rounding up to n + 1.
    top_room, left_room = height - crop_height, width - crop_width
    top = (torch.rand(batch_size, generator=generator, device=device) * (top_room + 1)).long().clamp_max(top_room)
    left = (torch.rand(batch_size, generator=generator, device=device) * (left_room + 1)).long().clamp_max(left_room)
    top = torch.where(any_fits, top, (height - fallback_height) // 2)
    left = torch.where(any_fits, left, (width - fallback_width) // 2)
    return torch.stack([top, left, crop_height, crop_width], dim=1)


def _interpolation_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """[B, out_size, in_size] weights resampling pixels [start, start + length) to out_size pixels.

    PyTorch's bilinear (``align_corners=False``) weights, clamped at the crop's edge, and
    its antialias (PIL-style) triangle widened by the shrink factor when shrinking.
    """
    start = start.to(torch.float32).unsqueeze(1)
    length = length.to(torch.float32).unsqueeze(1)
    step = length / out_size  # input pixels per output pixel
    center = start + (torch.arange(out_size, dtype=torch.float32, device=start.device) + 0.5) * step
    support = step.clamp(min=1.0).unsqueeze(2)
    pixel = torch.arange(in_size, dtype=torch.float32, device=start.device) + 0.5
    weights = (1.0 - (pixel - center.unsqueeze(2)).abs() / support).clamp(min=0.0)
    inside = (pixel >= start.unsqueeze(2)) & (pixel < (start + length).unsqueeze(2))
    weights = weights * inside
    return weights / weights.sum(dim=2, keepdim=True)


def _crop_resize(images: torch.Tensor, crop_box: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's crop box resized to size x size, flipped where ``flip``; two batched matmuls."""
    batch, channels, height, width = images.shape
    top, left, crop_height, crop_width = crop_box.unbind(dim=1)
    rows = _interpolation_matrix(top, crop_height, height, size)  # [B, S, H]
    columns = _interpolation_matrix(left, crop_width, width, size)  # [B, S, W]
    columns = torch.where(flip.view(-1, 1, 1), columns.flip(1), columns)
    # Plain bmm on [B, rows, cols] views: a broadcast matmul over channels is several times slower on CPU.
    resized = torch.bmm(images.reshape(batch, channels * height, width), columns.transpose(1, 2))
    resized = resized.view(batch, channels, height, size).transpose(1, 2).reshape(batch, height, channels * size)
    resized = torch.bmm(rows.to(resized.dtype), resized)  # [B, S, C * S]
    return resized.view(batch, size, channels, size).transpose(1, 2)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    red, green, blue = images.unbind(dim=1)
    return (LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue).unsqueeze(1)


def pad_centered(images: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """``[N, C, H, W]`` images padded with ``value`` to ``size`` x ``size``, centred.

    An odd margin puts the extra row or column on the bottom or right.
    """
    height, width = images.shape[-2:]
    if height > size or width > size:
        raise ValueError(f"cannot pad {height}x{width} images to {size}x{size}")
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(images, (left, size - width - left, top, size - height - top), value=value)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert images to ``channels``: RGB to 1 channel by ITU-R 601-2 luma, 1 channel to RGB by copying.

    So an RGB teacher can teach a student of grayscale data (and back). Luma is a
    convex combination, so it keeps the [-1, 1] or [0, 1] range of its input.
    """
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        return _grayscale(images)
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def gan_view(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Images (uint8, or float in [-1, 1]) as a GAN of ``channels`` channels and resolution ``size`` takes them.

    Float in [-1, 1] (float input is not clamped, so that gradients reach all of a generator's
    output), channels matched (:func:`match_channels`); smaller images are padded with -1 in the
    centre, as ``train-gan`` shows its GAN the 28 px Fashion-MNIST in 32 px; larger ones are
    resized (antialiased bilinear).
    """
    if images.dtype == torch.uint8:
        images = images.float().mul_(2 / 255).sub_(1)
    images = match_channels(images, channels)
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    if height <= size and width <= size:
        return pad_centered(images, size, -1.0)
    return center_view(images, size, (0.5,) * channels, (0.5,) * channels)


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision: ``clamp(factor * x, 0, 1)``."""
    return (images * _per_image(factor)).clamp_(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision: blend with the per-image mean of the grayscale, ``clamp(f * x + (1 - f) * mean, 0, 1)``."""
    gray = _grayscale(images) if images.shape[1] == 3 else images
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    factor = _per_image(factor)
    return (images * factor + (1.0 - factor) * mean).clamp_(0.0, 1.0)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision: blend with the grayscale, ``clamp(f * x + (1 - f) * gray, 0, 1)``."""
    factor = _per_image(factor)
    return (images * factor + (1.0 - factor) * _grayscale(images)).clamp_(0.0, 1.0)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision: RGB -> HSV, ``h = (h + shift) mod 1``, HSV -> RGB; ``shift`` in turns.

    ``sextant`` is 6h before the mod, with torchvision's priority when channels tie (red,
    then green, then blue). Value and min are kept, so channel n of the result is
    ``value - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (6h + n) mod 6``, n = 5, 3, 1.
    """
    red, green, blue = images.unbind(dim=1)
    value = torch.maximum(torch.maximum(red, green), blue)
    chroma = value - torch.minimum(torch.minimum(red, green), blue)
    inverse = torch.where(chroma > 0, chroma.reciprocal(), 0.0)
    sextant = torch.where(
        value == red,
        green - blue,
        torch.where(value == green, (blue - red).add_(chroma, alpha=2.0), (red - green).add_(chroma, alpha=4.0)),
    )
    sextant = sextant.mul_(inverse).add_((6.0 * shift).to(images.dtype).view(-1, 1, 1))
    result = torch.empty_like(images, memory_format=torch.contiguous_format)
    for channel, offset in enumerate((5.0, 3.0, 1.0)):
        k = torch.remainder(sextant + offset, 6.0)
        torch.minimum(k, 4.0 - k, out=k).clamp_(0.0, 1.0)
        torch.sub(value, k.mul_(chroma), out=result[:, channel])
    return result


def blur_kernel_size(size: int) -> int:
    """The original SimCLR code's kernel: 10% of the image, made odd (23 at 224, 9 at 96)."""
    return 2 * (size // 20) + 1


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian (reflect padding, like torchvision); a delta where not ``apply``."""
    batch, channels, height, width = images.shape
    kernel_size = blur_kernel_size(min(height, width))
    radius = kernel_size // 2
    offsets = torch.arange(kernel_size, dtype=torch.float32, device=images.device) - radius
    kernel = torch.exp(-0.5 * (offsets / sigma.float().unsqueeze(1)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (offsets == 0).float().expand_as(kernel)
    kernel = torch.where(apply.unsqueeze(1), kernel, delta)
    kernel = kernel.repeat_interleave(channels, dim=0).to(images.dtype)  # [B * C, k]
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(-1, 1, kernel_size, 1), groups=batch * channels)
    flat = F.conv2d(flat, kernel.view(-1, 1, 1, kernel_size), groups=batch * channels)
    return flat.view(batch, channels, height, width)


class BatchAugmentation:
    """The SimCLR/VICReg augmentation on a batch, with independent parameters per image.

    Call it with uint8 images (0..255) or generator output (float in [-1, 1]), shaped
    [B, C, H, W] on any device; it returns float32 normalized images [B, C, size, size].
    See the module docstring for the semantics and the choices made.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter_prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        flip_prob: float = 0.5,
    ) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {mean} and {std}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.size = size
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.jitter_prob = jitter_prob
        self.brightness = (max(0.0, 1.0 - brightness), 1.0 + brightness)
        self.contrast = (max(0.0, 1.0 - contrast), 1.0 + contrast)
        self.saturation = (max(0.0, 1.0 - saturation), 1.0 + saturation)
        self.hue = (-hue, hue)
        self.grayscale_prob = grayscale_prob
        self.blur_prob = blur_prob
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.flip_prob = flip_prob

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"jitter_prob={self.jitter_prob}, grayscale_prob={self.grayscale_prob}, "
            f"blur_prob={self.blur_prob}, flip_prob={self.flip_prob})"
        )

    def sample_params(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> AugmentationParams:
        """Draw every image's parameters with ``generator`` on its device, then move them to ``device``.

        ``image_size`` is the input's (height, width), which the crop boxes depend on;
        it defaults to (size, size).
        """
        height, width = image_size if image_size is not None else (self.size, self.size)
        draw_device = generator.device if generator is not None else torch.device("cpu")
        params = AugmentationParams(
            crop_box=_sample_crop_boxes(batch_size, height, width, self.scale, self.ratio, generator, draw_device),
            flip=_bernoulli(batch_size, self.flip_prob, generator, draw_device),
            jitter=_bernoulli(batch_size, self.jitter_prob, generator, draw_device),
            brightness=_uniform(batch_size, self.brightness, generator, draw_device),
            contrast=_uniform(batch_size, self.contrast, generator, draw_device),
            saturation=_uniform(batch_size, self.saturation, generator, draw_device),
            hue=_uniform(batch_size, self.hue, generator, draw_device),
            grayscale=_bernoulli(batch_size, self.grayscale_prob, generator, draw_device),
            blur=_bernoulli(batch_size, self.blur_prob, generator, draw_device),
            blur_sigma=_uniform(batch_size, self.blur_sigma, generator, draw_device),
        )
        return params if device is None else params.to(device)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
        batch, channels, height, width = images.shape
        if channels != len(self.mean):
            raise ValueError(f"{channels}-channel images, but mean and std have {len(self.mean)} values")
        params = self.sample_params(batch, generator, images.device, image_size=(height, width))
        return self.apply(images, params)

    def apply(self, images: torch.Tensor, params: AugmentationParams) -> torch.Tensor:
        """The augmentation with given parameters (``params`` on the images' device)."""
        memory_format = _memory_format(images)
        unit = to_unit_range(images)
        # Under autocast the matmul runs in bf16, whose rounding may step just outside [0, 1].
        views = _crop_resize(unit, params.crop_box, params.flip, self.size)
        views = views.to(torch.float32, memory_format=torch.contiguous_format).clamp_(0.0, 1.0)

        if self.jitter_prob > 0:
            jitter = params.jitter
            ones = torch.ones_like(params.brightness)
            views = adjust_brightness(views, torch.where(jitter, params.brightness, ones))
            views = adjust_contrast(views, torch.where(jitter, params.contrast, ones))
            if views.shape[1] == 3:
                views = adjust_saturation(views, torch.where(jitter, params.saturation, ones))
                shifted = adjust_hue(views, params.hue)
                views = torch.where(_per_image(jitter & (params.hue != 0)), shifted, views)

        if self.grayscale_prob > 0 and views.shape[1] == 3:
            views = torch.where(_per_image(params.grayscale), _grayscale(views).expand_as(views), views)

        if self.blur_prob > 0:
            views = _gaussian_blur(views, params.blur_sigma, params.blur).float()

        return normalize(views, self.mean, self.std).contiguous(memory_format=memory_format)


def normalization_stats(dataset: str, channels: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``dataset``'s per-channel (mean, std) for its images read with ``channels`` channels (default: its usual).

    An image folder holds grayscale or color images. Its grayscale images are the luma of color
    ones (the reader converts with the same ITU-R 601-2 weights), so their statistics are the luma
    of the color statistics: exact for the mean, and for the std when the channels are fully
    correlated (nearly so in natural images).
    """
    info = dataset_info(dataset)
    mean, std = info.mean, info.std
    if channels is None or len(mean) == channels:
        return mean, std
    if len(mean) == 3 and channels == 1:
        luma = [sum(weight * value for weight, value in zip(LUMA_WEIGHTS, values)) for values in (mean, std)]
        return (luma[0],), (luma[1],)
    raise ConfigError(
        f"{dataset} has {len(mean)}-channel images, not {channels}-channel; use a backbone made for its images"
    )


def augmentation_for(
    dataset: str, size: int | None = None, channels: int | None = None, **overrides: object
) -> BatchAugmentation:
    """The paper's recipe for ``dataset``: its mean and std, blur on (p = 0.5) above 32 pixels.

    ``size`` defaults to the dataset's view size: 32 for CIFAR and Fashion-MNIST (whose 28x28
    images the crop resizes) and 96 for STL-10; ``imagefolder`` has none and needs it.
    ``channels`` is the images' (:attr:`ImageDataset.num_channels`; default: the dataset's
    usual, RGB for an image folder). ``overrides`` go to :class:`BatchAugmentation`.
    """
    mean, std = normalization_stats(dataset, channels)
    size = dataset_info(dataset).view_size if size is None else size
    if size is None:
        raise ConfigError(f"dataset {dataset!r} has no default image size; set the augmentation size")
    settings: dict[str, object] = {"blur_prob": 0.5 if size > 32 else 0.0}
    settings.update(overrides)
    return BatchAugmentation(size, mean, std, **settings)  # type: ignore[arg-type]
