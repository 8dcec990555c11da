"""Tests for the batched augmentation: per-image randomness, torchvision semantics, precision."""

import math

import pytest
import torch
import torch.nn.functional as F

from squeeze_span.data import augment as A
from squeeze_span.data import augmentation_for, center_view, gan_view, normalization_stats, to_unit_range
from squeeze_span.data.augment import BatchAugmentation
from squeeze_span.errors import ConfigError, DatasetError

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def images(batch=4, channels=3, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=generator)


def unnormalize(output, mean=MEAN, std=STD):
    return output * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


def test_copies_of_one_image_get_different_crops_and_outputs():
    augmentation = BatchAugmentation(32, MEAN, STD, jitter_prob=0.0, grayscale_prob=0.0, flip_prob=0.0)
    batch = images(1).expand(8, -1, -1, -1).contiguous()
    params = augmentation.sample_params(8, torch.Generator().manual_seed(1), image_size=(32, 32))
    assert len({tuple(box.tolist()) for box in params.crop_box}) == 8
    output = augmentation(batch, torch.Generator().manual_seed(1))
    for first in range(8):
        for second in range(first + 1, 8):
            assert not torch.allclose(output[first], output[second])


def test_shape_dtype_and_range():
    augmentation = BatchAugmentation(24, MEAN, STD)
    output = augmentation(images(6, size=32), torch.Generator().manual_seed(0))
    assert output.shape == (6, 3, 24, 24)
    assert output.dtype == torch.float32
    unit = unnormalize(output)
    assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5
    # Normalization is (x - mean) / std of values in [0, 1].
    expected = (unit.clamp(0, 1) - torch.tensor(MEAN).view(1, -1, 1, 1)) / torch.tensor(STD).view(1, -1, 1, 1)
    torch.testing.assert_close(output, expected, atol=1e-4, rtol=0)


def test_all_probabilities_zero_and_full_crop_is_exactly_center_view():
    augmentation = BatchAugmentation(
        32, MEAN, STD, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_prob=0.0, grayscale_prob=0.0, flip_prob=0.0
    )
    batch = images(5)
    assert torch.equal(augmentation(batch, torch.Generator().manual_seed(3)), center_view(batch, 32, MEAN, STD))


def test_crop_equals_antialiased_interpolate_of_the_box_and_flip_mirrors_it():
    augmentation = BatchAugmentation(20, MEAN, STD, jitter_prob=0.0, grayscale_prob=0.0)
    batch = images(6, size=36)
    params = augmentation.sample_params(6, torch.Generator().manual_seed(4), image_size=(36, 36))
    params.flip = torch.tensor([True, False] * 3)
    output = unnormalize(augmentation.apply(batch, params))
    for index, (top, left, height, width) in enumerate(params.crop_box.tolist()):
        crop = to_unit_range(batch[index : index + 1, :, top : top + height, left : left + width])
        expected = F.interpolate(crop, size=(20, 20), mode="bilinear", align_corners=False, antialias=True)
        if params.flip[index]:
            expected = expected.flip(-1)
        torch.testing.assert_close(output[index : index + 1], expected, atol=1e-5, rtol=0)


def test_parameter_statistics():
    augmentation = BatchAugmentation(224, MEAN, STD, blur_prob=0.5)
    count = 20000
    params = augmentation.sample_params(count, torch.Generator().manual_seed(0), image_size=(224, 224))
    top, left, height, width = params.crop_box.double().unbind(1)
    area = height * width / 224**2
    assert area.min() >= 0.19 and area.max() <= 1.0
    # Uniform in [0.2, 1] has mean 0.6; large draws with extreme ratios do not fit and are redrawn.
    assert 0.52 < area.mean() < 0.6
    log_ratio = torch.log(width / height)
    assert log_ratio.abs().max() <= math.log(4 / 3) + 0.02
    assert abs(log_ratio.mean()) < 0.01
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 224).all() and (left + width <= 224).all()
    for flags, p in ((params.flip, 0.5), (params.jitter, 0.8), (params.grayscale, 0.2), (params.blur, 0.5)):
        assert abs(flags.float().mean().item() - p) < 0.015
    assert params.blur_sigma.min() >= 0.1 and params.blur_sigma.max() <= 2.0
    assert abs(params.blur_sigma.mean().item() - 1.05) < 0.02
    for factor in (params.brightness, params.contrast, params.saturation):
        assert factor.min() >= 0.6 and factor.max() <= 1.4 and abs(factor.mean().item() - 1.0) < 0.01
    assert params.hue.min() >= -0.1 and params.hue.max() <= 0.1


def test_crop_falls_back_to_center_crop_when_nothing_fits():
    # A 10x100 strip: no box of 90%+ area with ratio in [3/4, 4/3] fits. torchvision then takes, as the
    # image's ratio 10 is above 4/3, the full height and width round(10 * 4/3) = 13, centered: left 43.
    boxes = A._sample_crop_boxes(100, 10, 100, (0.9, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0), "cpu")
    assert (boxes == torch.tensor([0, 43, 10, 13])).all(dim=1).all()


def test_seeded_generator_reproduces_and_different_seeds_differ():
    augmentation = BatchAugmentation(32, MEAN, STD)
    batch = images(8)
    first = augmentation(batch, torch.Generator().manual_seed(7))
    again = augmentation(batch, torch.Generator().manual_seed(7))
    other = augmentation(batch, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_unit_range_of_uint8_and_generator_output():
    assert torch.equal(to_unit_range(torch.tensor([0, 51, 255], dtype=torch.uint8)), torch.tensor([0.0, 0.2, 1.0]))
    assert torch.equal(
        to_unit_range(torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0])), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0])
    )


def test_float_input_in_minus_one_one_is_clamped():
    identity = BatchAugmentation(
        8, MEAN, STD, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_prob=0.0, grayscale_prob=0.0, flip_prob=0.0
    )
    generated = torch.full((2, 3, 8, 8), 5.0)
    generated[1] = -5.0
    unit = unnormalize(identity(generated))
    torch.testing.assert_close(unit[0], torch.ones(3, 8, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(unit[1], torch.zeros(3, 8, 8), atol=1e-5, rtol=0)
    assert BatchAugmentation(8, MEAN, STD)(generated * 0.1, torch.Generator().manual_seed(0)).isfinite().all()


def test_one_channel_images_skip_hue_saturation_and_grayscale():
    augmentation = BatchAugmentation(32, (0.286,), (0.353,), grayscale_prob=1.0, jitter_prob=1.0)
    batch = images(4, channels=1, size=28)
    params = augmentation.sample_params(4, torch.Generator().manual_seed(0), image_size=(28, 28))
    output = augmentation.apply(batch, params)
    assert output.shape == (4, 1, 32, 32)
    # Only brightness then contrast: recompute them on the plain crop.
    no_color = BatchAugmentation(32, (0.286,), (0.353,), jitter_prob=0.0, grayscale_prob=0.0)
    crop = unnormalize(no_color.apply(batch, params), (0.286,), (0.353,))
    expected = A.adjust_contrast(A.adjust_brightness(crop, params.brightness), params.contrast)
    torch.testing.assert_close(unnormalize(output, (0.286,), (0.353,)), expected, atol=1e-5, rtol=0)


# Hand formulas of torchvision's functional tensor ops, on tiny images.
PIXELS = torch.tensor([[[[0.2, 0.9]], [[0.5, 0.1]], [[0.8, 0.4]]]])  # [1, 3, 1, 2]: two RGB pixels


def test_brightness_multiplies_and_clamps():
    result = A.adjust_brightness(PIXELS, torch.tensor([1.5]))
    torch.testing.assert_close(result, (PIXELS * 1.5).clamp(0, 1))
    assert result[0, 0, 0, 1] == 1.0


def test_contrast_blends_with_mean_of_grayscale():
    gray = 0.299 * PIXELS[:, 0] + 0.587 * PIXELS[:, 1] + 0.114 * PIXELS[:, 2]
    mean = gray.mean()
    result = A.adjust_contrast(PIXELS, torch.tensor([0.5]))
    torch.testing.assert_close(result, (0.5 * PIXELS + 0.5 * mean).clamp(0, 1))
    torch.testing.assert_close(A.adjust_contrast(PIXELS, torch.tensor([0.0])), mean.expand_as(PIXELS).contiguous())


def test_saturation_zero_is_grayscale_and_two_extrapolates():
    gray = (0.299 * PIXELS[:, 0] + 0.587 * PIXELS[:, 1] + 0.114 * PIXELS[:, 2]).unsqueeze(1)
    torch.testing.assert_close(A.adjust_saturation(PIXELS, torch.tensor([0.0])), gray.expand_as(PIXELS))
    torch.testing.assert_close(A.adjust_saturation(PIXELS, torch.tensor([2.0])), (2 * PIXELS - gray).clamp(0, 1))


def test_hue_rotates_primaries_and_keeps_value_and_chroma():
    red, green, blue = torch.eye(3).view(3, 3, 1, 1).unbind(0)
    primaries = torch.stack([red, green, blue])  # [3, 3, 1, 1]
    half = A.adjust_hue(primaries, torch.full((3,), 0.5))
    torch.testing.assert_close(half.flatten(1), torch.tensor([[0.0, 1, 1], [1, 0, 1], [1, 1, 0]]))  # complements
    third = A.adjust_hue(primaries, torch.full((3,), 1 / 3))
    torch.testing.assert_close(third.flatten(1), torch.tensor([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]), atol=1e-6, rtol=0)
    # (0.2, 0.5, 0.8): h = 7/12, s = 0.75, v = 0.8. A shift of 0.1 gives h = 0.6833, in the blue-to-magenta
    # sextant (i = 4): (t, p, v) with p = v (1 - s) = 0.2, f = 6h - 4 = 0.1, t = v (1 - s (1 - f)) = 0.26.
    shifted = A.adjust_hue(PIXELS[..., :1], torch.tensor([0.1]))
    torch.testing.assert_close(shifted.flatten(), torch.tensor([0.26, 0.2, 0.8]), atol=1e-5, rtol=0)
    assert torch.equal(A.adjust_hue(torch.full((1, 3, 2, 2), 0.3), torch.tensor([0.25])), torch.full((1, 3, 2, 2), 0.3))


def torchvision_hue(img, hue_factor):
    """torchvision's _rgb2hsv, hue shift and _hsv2rgb (functional_tensor), transcribed."""
    r, g, b = img.unbind(dim=-3)
    maxc, minc = img.max(dim=-3).values, img.min(dim=-3).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_divisor, (maxc - g) / cr_divisor, (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = (h + hue_factor) % 1.0
    v = maxc
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int32) % 6
    p = torch.clamp(v * (1.0 - s), 0.0, 1.0)
    q = torch.clamp(v * (1.0 - s * f), 0.0, 1.0)
    t = torch.clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    mask = i.unsqueeze(dim=-3) == torch.arange(6).view(-1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=-3)
    a2 = torch.stack((t, v, v, q, p, p), dim=-3)
    a3 = torch.stack((p, p, t, v, v, q), dim=-3)
    return torch.einsum("...ijk, ...xijk -> ...xjk", mask.to(img.dtype), torch.stack((a1, a2, a3), dim=-4))


def test_hue_equals_torchvision_on_random_pixels_with_ties():
    pixels = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pixels[:, 1, :2] = pixels[:, 0, :2]  # red = green ties
    pixels[:, 2, 2:4] = pixels[:, 1, 2:4]  # green = blue ties
    pixels[:, :, 4] = 0.5  # gray
    shifts = torch.tensor([-0.5, -0.1, 0.0, 0.07, 0.5])
    expected = torch.stack([torchvision_hue(image, float(shift)) for image, shift in zip(pixels, shifts)])
    torch.testing.assert_close(A.adjust_hue(pixels, shifts), expected, atol=1e-5, rtol=0)


def test_grayscale_uses_luma_weights_replicated():
    augmentation = BatchAugmentation(
        1, (0, 0, 0), (1, 1, 1), scale=(1, 1), ratio=(1, 1), jitter_prob=0.0, grayscale_prob=1.0, flip_prob=0.0
    )
    pixel = torch.tensor([255, 0, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    expected = 0.299 * 1.0 + 0.114 * 0.2
    torch.testing.assert_close(augmentation(pixel).flatten(), torch.full((3,), expected))


def test_blur_kernel_sizes_and_blur_of_an_impulse_is_a_normalized_gaussian():
    assert (A.blur_kernel_size(224), A.blur_kernel_size(96)) == (23, 9)
    impulse = torch.zeros(2, 3, 96, 96)
    impulse[:, :, 48, 48] = 1.0
    blurred = A._gaussian_blur(impulse, torch.tensor([1.0, 1.0]), torch.tensor([True, False]))
    offsets = torch.arange(-4, 5, dtype=torch.float32)
    kernel = torch.exp(-0.5 * offsets**2)
    kernel /= kernel.sum()
    torch.testing.assert_close(blurred[0, 1, 44:53, 44:53], kernel[:, None] * kernel[None, :])
    assert torch.equal(blurred[1], impulse[1])


def test_bf16_autocast_with_channels_last_input():
    augmentation = BatchAugmentation(48, MEAN, STD, blur_prob=0.5)
    batch = images(4, size=48).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = augmentation(batch, torch.Generator().manual_seed(0))
    assert output.shape == (4, 3, 48, 48) and output.dtype == torch.float32
    assert output.is_contiguous(memory_format=torch.channels_last)
    assert output.isfinite().all()
    reference = augmentation(batch, torch.Generator().manual_seed(0))
    assert (output - reference).abs().max() < 0.1  # bf16 rounding of the crop, in units of std


def test_augmentation_for_recipes():
    stl = augmentation_for("stl10")
    assert (stl.size, stl.blur_prob) == (96, 0.5)
    cifar = augmentation_for("cifar10")
    assert (cifar.size, cifar.blur_prob, len(cifar.mean)) == (32, 0.0, 3)
    fashion = augmentation_for("fashion_mnist")
    assert (fashion.size, len(fashion.mean)) == (32, 1)
    assert augmentation_for("cifar100", flip_prob=0.0).flip_prob == 0.0
    with pytest.raises(ConfigError, match="size"):
        augmentation_for("imagefolder")
    assert augmentation_for("imagefolder", 224).blur_prob == 0.5
    with pytest.raises(DatasetError, match="cifar10"):
        augmentation_for("mnist")


def test_image_folder_statistics_follow_the_channel_count():
    rgb = normalization_stats("imagefolder", 3)
    assert rgb == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) == normalization_stats("imagefolder")
    (mean,), (std,) = normalization_stats("imagefolder", 1)  # the luma of ImageNet's, by hand
    assert mean == pytest.approx(0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406)
    assert std == pytest.approx(0.299 * 0.229 + 0.587 * 0.224 + 0.114 * 0.225)
    gray = augmentation_for("imagefolder", 16, channels=1)
    assert gray.mean == (mean,) and gray(images(channels=1, size=20)).shape == (4, 1, 16, 16)
    with pytest.raises(ConfigError, match="^fashion_mnist has 1-channel images, not 3-channel; use a backbone"):
        normalization_stats("fashion_mnist", 3)


def test_gan_view_of_real_images_is_minus_one_to_one_in_the_gans_channels_and_size():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 1, 3, 3)
    view = gan_view(images, 3, 5)  # 1 channel to RGB, 3 px padded to 5 with -1
    assert view.shape == (2, 3, 5, 5) and view.dtype == torch.float32
    torch.testing.assert_close(view[0, 1, 2, 1:4], torch.tensor([-1.0, -0.6, 1.0]))
    assert view[:, :, 0].eq(-1).all() and view[:, :, :, 0].eq(-1).all()
    same = torch.full((2, 1, 5, 5), 1.5)  # a generator's float output: neither clamped nor moved
    assert gan_view(same, 1, 5) is same
    torch.testing.assert_close(gan_view(torch.full((1, 1, 8, 8), 0.25), 1, 4), torch.full((1, 1, 4, 4), 0.25))
