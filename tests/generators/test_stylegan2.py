"""StyleGAN2-ADA networks: NVIDIA's numbers on the tiny_uncond fixture, and facts of the ops.

The fixture (../shared/fixtures/stylegan2_ada) holds a real stylegan2-ada-pytorch snapshot
pickle with random weights and the outputs NVIDIA's own code computed from it in float32.
"""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
import torch.nn.functional as F

from squeeze_span.errors import CheckpointError, ConfigError
from squeeze_span.generators.stylegan2 import (
    Discriminator,
    Generator,
    MappingNetwork,
    build_network,
    ops,
)
from tests.conftest import FIXTURES

PKL = FIXTURES / "tiny_uncond.pkl"
EXPECTED = FIXTURES / "tiny_uncond_expected.pt"
TOL = {"atol": 1e-4, "rtol": 1e-4}

# bf16 autocast against NVIDIA's fp32 outputs on the fixture (measured: image 0.089 abs with
# values up to 7.9, i.e. 1.1% of the range; block features 0.7-1.2% of each block's max;
# D logits 0.0043 abs). The bounds leave about 2x headroom.
BF16_IMG_REL = 0.025
BF16_BLOCK_REL = 0.025
BF16_D_ABS = 0.01

needs_fixture = pytest.mark.skipif(
    not EXPECTED.exists(), reason=f"StyleGAN2 fixture not found at {FIXTURES} (shared/fixtures/stylegan2_ada)"
)


@pytest.fixture(scope="module")
def expected() -> dict:
    if not EXPECTED.exists():
        pytest.skip(f"StyleGAN2 fixture not found at {EXPECTED}")
    return torch.load(EXPECTED, weights_only=True)


@pytest.fixture(scope="module")
def nets() -> dict:
    if not PKL.exists():
        pytest.skip(f"StyleGAN2 fixture pickle not found at {PKL}")
    safe_pickle = pytest.importorskip("squeeze_span.generators.safe_pickle")
    data = safe_pickle.read_stylegan2_pkl(PKL)
    return {
        key: build_network(data[key].class_name, data[key].init_kwargs, data[key].init_args, data[key].state_dict)
        for key in ("G", "G_ema", "D")
    }


def _hooked_features(G: Generator, names: list[str]) -> tuple[dict, list]:
    features: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(G.synthesis, name).register_forward_hook(lambda m, a, out, name=name: features.__setitem__(name, out))
        for name in names
    ]
    return features, hooks


# --- against NVIDIA's outputs -------------------------------------------------------------


@needs_fixture
def test_state_dict_keys_and_init_kwargs_match_nvidia(expected: dict) -> None:
    G = Generator(**expected["init_kwargs_G"])
    D = Discriminator(**expected["init_kwargs_D"])
    assert sorted(G.state_dict()) == expected["state_dict_keys_G"]
    assert sorted(D.state_dict()) == expected["state_dict_keys_D"]
    assert len(expected["state_dict_keys_G"]) == 75 and len(expected["state_dict_keys_D"]) == 37
    assert G.init_kwargs == expected["init_kwargs_G"] and D.init_kwargs == expected["init_kwargs_D"]
    assert Generator(**G.init_kwargs).init_kwargs == G.init_kwargs
    assert Discriminator(**D.init_kwargs).init_kwargs == D.init_kwargs
    assert (G.z_dim, G.c_dim, G.w_dim, G.num_ws, G.img_resolution, G.img_channels) == (32, 0, 32, 8, 32, 3)


def test_pickle_entries_carry_nvidia_init_kwargs(nets: dict, expected: dict) -> None:
    assert nets["G_ema"].init_kwargs == expected["init_kwargs_G"]
    assert nets["D"].init_kwargs == expected["init_kwargs_D"]


def test_mapping_matches_nvidia(nets: dict, expected: dict) -> None:
    G = nets["G_ema"]
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(expected["z"], expected["c"]), expected["ws_psi1"], **TOL)
        ws = G.mapping(expected["z"], expected["c"], truncation_psi=0.7, truncation_cutoff=None)
    torch.testing.assert_close(ws, expected["ws_psi07"], **TOL)


@pytest.mark.parametrize(
    ("key", "noise_mode", "expected_key"),
    [
        ("G_ema", "const", "img_const"),
        ("G_ema", "none", "img_none"),
        ("G", "const", "img_G_const"),
    ],
)
def test_images_match_nvidia(nets: dict, expected: dict, key: str, noise_mode: str, expected_key: str) -> None:
    with torch.no_grad():
        img = nets[key](expected["z"], expected["c"], truncation_psi=1, noise_mode=noise_mode)
    assert img.dtype == torch.float32
    torch.testing.assert_close(img, expected[expected_key], **TOL)


def test_const_noise_is_the_default(nets: dict, expected: dict) -> None:
    with torch.no_grad():
        img = nets["G_ema"](expected["z"], expected["c"])
    torch.testing.assert_close(img, expected["img_const"], **TOL)


def test_every_block_output_matches_nvidia(nets: dict, expected: dict) -> None:
    G = nets["G_ema"]
    names = expected["block_names"]
    assert names == [f"b{res}" for res in G.synthesis.block_resolutions]
    features, hooks = _hooked_features(G, names)
    with torch.no_grad():
        G(expected["z"], expected["c"], noise_mode="const")
    for hook in hooks:
        hook.remove()
    for name in names:
        x, img = features[name]
        assert img.shape[-1] == x.shape[-1] == int(name[1:])
        torch.testing.assert_close(x, expected[f"block_{name}"], **TOL)


@pytest.mark.parametrize(
    ("input_key", "c_key", "logits_key"),
    [
        ("d_input", "c", "d_logits_real"),
        ("img_const", "c", "d_logits_fake"),
        ("d_input_b8", "c_b8", "d_logits_real_b8"),
    ],
)
def test_discriminator_matches_nvidia(nets: dict, expected: dict, input_key: str, c_key: str, logits_key: str) -> None:
    with torch.no_grad():
        logits = nets["D"](expected[input_key], expected[c_key])
    assert logits.shape == expected[logits_key].shape
    torch.testing.assert_close(logits, expected[logits_key], **TOL)


@pytest.mark.parametrize("kernels", ["torch_bf16", "fp32_on_bf16_operands"])
def test_bf16_autocast_stays_close_to_nvidia_fp32(kernels: str, nets: dict, expected: dict) -> None:
    """In bf16 by torch's kernels, and by fp32 kernels on bf16-rounded operands, as on a CPU without
    bf16 hardware (Bf16ProductsInFp32Kernels)."""
    from squeeze_span.runtime import Bf16ProductsInFp32Kernels

    G, D = nets["G_ema"], nets["D"]
    features, hooks = _hooked_features(G, expected["block_names"])
    emulation = Bf16ProductsInFp32Kernels() if kernels == "fp32_on_bf16_operands" else contextlib.nullcontext()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), emulation:
        img = G(expected["z"], expected["c"])
        logits = D(expected["d_input_b8"], expected["c_b8"])
    for hook in hooks:
        hook.remove()
    reference = expected["img_const"]
    assert img.dtype == torch.float32 and logits.dtype == torch.float32
    assert (img - reference).abs().max() <= BF16_IMG_REL * reference.abs().max()
    for name in expected["block_names"]:
        x, ref = features[name][0], expected[f"block_{name}"]
        assert x.dtype == torch.bfloat16
        assert (x.float() - ref).abs().max() <= BF16_BLOCK_REL * ref.abs().max()
    assert (logits - expected["d_logits_real_b8"]).abs().max() <= BF16_D_ABS


# --- other configurations, random weights ---------------------------------------------------


def _tiny_G(**overrides) -> Generator:
    kwargs = {
        "z_dim": 16,
        "c_dim": 0,
        "w_dim": 16,
        "img_resolution": 16,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {"channel_base": 128, "channel_max": 16},
    }
    kwargs.update(overrides)
    return Generator(**kwargs).eval()


def _tiny_D(**overrides) -> Discriminator:
    kwargs = {"c_dim": 0, "img_resolution": 16, "img_channels": 3, "channel_base": 128, "channel_max": 16}
    kwargs.update(overrides)
    return Discriminator(**kwargs).eval()


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("resolution", [16, 64])
def test_generator_architectures_and_resolutions(architecture: str, resolution: int) -> None:
    G = _tiny_G(
        img_resolution=resolution,
        synthesis_kwargs={
            "channel_base": 256,
            "channel_max": 16,
            "architecture": architecture,
            "conv_clamp": None,
        },
    )
    # ws rows: one per conv, plus the last block's ToRGB.
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    with torch.no_grad():
        img = G(torch.randn(3, 16), None, noise_mode="random")
    assert img.shape == (3, 3, resolution, resolution) and torch.isfinite(img).all()
    has_torgb = {res: hasattr(getattr(G.synthesis, f"b{res}"), "torgb") for res in G.synthesis.block_resolutions}
    assert all(has_torgb.values()) == (architecture == "skip") and has_torgb[resolution]
    assert hasattr(getattr(G.synthesis, f"b{resolution}"), "skip") == (architecture == "resnet")


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("resolution", [16, 64])
def test_discriminator_architectures_and_resolutions(architecture: str, resolution: int) -> None:
    D = _tiny_D(img_resolution=resolution, architecture=architecture, channel_base=256, conv_clamp=None)
    with torch.no_grad():
        logits = D(torch.randn(4, 3, resolution, resolution), None)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    assert hasattr(D, "b4") and not hasattr(D, "mapping")


def test_conditional_generator_and_discriminator() -> None:
    G = _tiny_G(c_dim=10)
    D = _tiny_D(c_dim=10, cmap_dim=8)
    assert G.mapping.embed.weight.shape == (16, 10) and "mapping.w_avg" in G.state_dict()
    assert D.mapping.embed.weight.shape == (8, 10) and not any("w_avg" in key for key in D.state_dict())
    c = F.one_hot(torch.arange(4) % 10, 10).float()
    with torch.no_grad():
        img = G(torch.randn(4, 16), c)
        logits = D(img, c)
        other_class = G(torch.zeros(4, 16), c.roll(1, dims=1))
    assert img.shape == (4, 3, 16, 16) and logits.shape == (4, 1) and torch.isfinite(logits).all()
    assert not torch.allclose(G(torch.zeros(4, 16), c), other_class)
    # The projection: logits = <out(x), mapping(c)> / sqrt(cmap_dim).
    captured = {}
    D.b4.out.register_forward_hook(lambda m, a, out: captured.__setitem__("out", out))
    with torch.no_grad():
        logits = D(img, c)
        cmap = D.mapping(None, c)
    torch.testing.assert_close(logits, (captured["out"] * cmap).sum(1, keepdim=True) / math.sqrt(8))


@pytest.mark.parametrize("num_layers", [1, 4])
def test_mapping_depths(num_layers: int) -> None:
    G = _tiny_G(mapping_kwargs={"num_layers": num_layers})
    assert [name for name, _ in G.mapping.named_children()] == [f"fc{i}" for i in range(num_layers)]
    ws = G.mapping(torch.randn(2, 16), None)
    assert ws.shape == (2, G.num_ws, 16)
    assert torch.equal(ws[:, 0], ws[:, -1])


def test_w_avg_update_and_truncation_cutoff() -> None:
    mapping = MappingNetwork(z_dim=8, c_dim=0, w_dim=8, num_ws=4, num_layers=2)
    z = torch.randn(5, 8)
    mapping.eval()
    mapping(z, None)
    assert torch.count_nonzero(mapping.w_avg) == 0
    mapping.train()
    mapping(z, None, skip_w_avg_update=True)
    assert torch.count_nonzero(mapping.w_avg) == 0
    w = mapping(z, None)[:, 0].detach()
    torch.testing.assert_close(mapping.w_avg, w.mean(0) * (1 - 0.995))
    mapping.eval()
    before = mapping.w_avg.clone()
    mapping(z, None, update_emas=True)
    assert not torch.equal(mapping.w_avg, before)
    ws = mapping(z, None)
    cut = mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], mapping.w_avg + 0.5 * (ws[:, :2] - mapping.w_avg))
    torch.testing.assert_close(cut[:, 2:], ws[:, 2:])


def test_state_dict_round_trip_gives_identical_outputs() -> None:
    G, D = (
        _tiny_G(c_dim=3, synthesis_kwargs={"channel_base": 128, "channel_max": 16, "architecture": "resnet"}),
        _tiny_D(),
    )
    with torch.no_grad():
        for p in G.parameters():  # noise_strength starts at 0; make the noise inputs matter
            p.add_(0.1 * torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save({"G": G.state_dict(), "D": D.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    G2 = build_network("Generator", G.init_kwargs, state_dict=state["G"])
    D2 = build_network("training.networks.Discriminator", D.init_kwargs, state_dict=state["D"])
    z, c, img = torch.randn(4, 16), torch.randn(4, 3), torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(G(z, c, noise_mode="const"), G2(z, c, noise_mode="const"))
        assert torch.equal(D(img, None), D2(img, None))


def test_build_network_errors_are_actionable() -> None:
    with pytest.raises(CheckpointError, match="unknown StyleGAN2 network class 'AugmentPipe'"):
        build_network("AugmentPipe", {})
    G = _tiny_G()
    with pytest.raises(CheckpointError, match=r"^the state dict: .* has shape .* but Generator\(.*\) needs "):
        build_network("Generator", {**G.init_kwargs, "w_dim": 8}, state_dict=G.state_dict())


def test_minibatch_stddev_groups_are_strided_and_must_divide_the_batch() -> None:
    from squeeze_span.generators.stylegan2.layers import MinibatchStdLayer

    mbstd = MinibatchStdLayer(group_size=4)
    x = torch.zeros(8, 2, 1, 1)
    x[1::2] = torch.tensor([0.0, 2.0, 0.0, 2.0]).reshape(4, 1, 1, 1)  # group {1,3,5,7}: std 1
    out = mbstd(x)[:, -1, 0, 0]
    torch.testing.assert_close(out[0::2], torch.full([4], 1e-4))  # sqrt(eps) for a constant group
    torch.testing.assert_close(out[1::2], torch.ones(4))
    with pytest.raises(ConfigError, match="does not divide the batch size 6"):
        mbstd(torch.zeros(6, 2, 1, 1))


def test_modules_are_differentiable() -> None:
    G, D = _tiny_G(), _tiny_D()
    G.train()
    D.train()
    z = torch.randn(4, 16, requires_grad=True)
    D(G(z, None, noise_mode="random"), None).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert all(p.grad is not None for p in G.synthesis.parameters())
    assert all(p.grad is not None for p in D.parameters())


def test_bf16_autocast_runs_channels_last_and_keeps_fp32_image() -> None:
    G = _tiny_G()
    features, _ = _hooked_features(G, ["b16"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        img = G(torch.randn(2, 16), None)
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    x = features["b16"][0]
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_autocast_on_gpu() -> None:
    G, D = _tiny_G().cuda(), _tiny_D().cuda()
    z = torch.randn(4, 16, device="cuda")
    with torch.no_grad():
        reference = G(z, None)
        with torch.autocast("cuda", dtype=torch.float16):
            img = G(z, None)
            logits = D(img, None)
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()
    assert (img - reference).abs().max() <= 0.02 * reference.abs().max()


# --- the ops, by hand -----------------------------------------------------------------------


def test_setup_filter_is_normalised_outer_product() -> None:
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4)
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert ops.setup_filter([1] * 8).shape == (8,)


def test_upsample_of_an_impulse_places_the_filter_times_four() -> None:
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = 1.0
    out = ops.upsample2d(x, f)
    expected = torch.zeros(1, 1, 8, 8)
    # Input pixel i lands at 2i on the zero-stuffed grid; the 4-tap filter, padded 2 before,
    # covers rows 2i-1 .. 2i+2.
    expected[0, 0, 1:5, 3:7] = 4 * f
    torch.testing.assert_close(out, expected)
    assert out.sum().item() == pytest.approx(4.0)


def _upfirdn2d_loops(x, f, up, down, pad):
    """The definition, with Python loops: zero-stuff, pad, true convolution, keep every down-th."""
    n, c, h, w = x.shape
    stuffed = torch.zeros(n, c, h * up, w * up)
    stuffed[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = pad
    padded = torch.zeros(n, c, h * up + py0 + py1, w * up + px0 + px1)
    ys, xs = slice(max(py0, 0), padded.shape[2] - max(py1, 0)), slice(max(px0, 0), padded.shape[3] - max(px1, 0))
    padded[:, :, ys, xs] = stuffed[
        :, :, max(-py0, 0) : stuffed.shape[2] - max(-py1, 0), max(-px0, 0) : stuffed.shape[3] - max(-px1, 0)
    ]
    fh, fw = f.shape
    out_h, out_w = padded.shape[2] - fh + 1, padded.shape[3] - fw + 1
    out = torch.zeros(n, c, out_h, out_w)
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, :, i : i + fh, j : j + fw]
            out[:, :, i, j] = (window * f.flip([0, 1])).sum(dim=[2, 3])
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize(
    ("up", "down", "pad"),
    [(1, 1, (1, 1, 1, 1)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 2, 2)), (2, 2, (0, -1, 1, 2)), (1, 2, (-1, 1, 0, 0))],
)
def test_upfirdn2d_against_the_definition(up: int, down: int, pad: tuple) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5)
    f = torch.rand(4, 3) + 0.1  # asymmetric, so a flipped filter would show
    torch.testing.assert_close(
        ops.upfirdn2d(x, f, up=up, down=down, padding=pad), _upfirdn2d_loops(x, f, up, down, pad)
    )


def _modulated_conv_reference(x, weight, styles, up, f):
    """StyleGAN2's eq. 1-3 literally: per-sample modulated, demodulated weights, as a grouped conv."""
    n, i, h, w = x.shape
    o = weight.shape[0]
    w_n = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
    w_n = w_n * (w_n.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    if up == 1:
        y = F.conv2d(x.reshape(1, n * i, h, w), w_n.reshape(n * o, i, 3, 3), padding=1, groups=n)
        return y.reshape(n, o, h, w)
    wt = w_n.transpose(1, 2).reshape(n * i, o, 3, 3)
    y = F.conv_transpose2d(x.reshape(1, n * i, h, w), wt, stride=2, groups=n)
    y = ops.upfirdn2d(y.reshape(n, o, 2 * h + 1, 2 * w + 1), f, padding=1, gain=4)
    return y


@pytest.mark.parametrize("up", [1, 2])
def test_demodulation_identity(up: int) -> None:
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 5, 6, 6), torch.randn(4, 5, 3, 3), torch.randn(3, 5)
    f = ops.setup_filter([1, 3, 3, 1])
    fast = ops.modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, flip_weight=(up == 1))
    torch.testing.assert_close(fast, _modulated_conv_reference(x, weight, styles, up, f), atol=1e-5, rtol=1e-5)
    dcoef = ops.demodulation_coefficients(weight, styles)
    explicit = ((weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    torch.testing.assert_close(dcoef, explicit, atol=1e-6, rtol=1e-6)


def test_bias_act_clamps_after_the_gain() -> None:
    x = torch.tensor([[-10.0, -1.0, 0.5, 10.0]])
    y = ops.bias_act(x.reshape(1, 4, 1, 1), torch.ones(4), act="lrelu", clamp=5.0).flatten()
    expected = torch.tensor([-9.0 * 0.2, 0.0, 1.5, 11.0]) * math.sqrt(2)
    torch.testing.assert_close(y, expected.clamp(-5, 5))
    fused = ops.scale_bias_act(
        x.reshape(1, 4, 1, 1), None, torch.ones(1, 4, 1, 1), "lrelu", math.sqrt(2), 5.0
    ).flatten()
    torch.testing.assert_close(fused, expected.clamp(-5, 5))


@pytest.mark.parametrize("with_scale", [True, False])
def test_scale_bias_act_adds_the_noise_before_the_activation_and_leaves_its_input_alone(with_scale) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    scale = torch.rand(3, 4, 1, 1) + 0.5 if with_scale else None
    bias, noise = torch.randn(1, 4, 1, 1), torch.randn(3, 1, 5, 5)
    before = x.clone()
    y = ops.scale_bias_act(x, scale, bias, "lrelu", math.sqrt(2), 0.7, noise=noise)
    pre = x * (scale if with_scale else 1.0) + bias + noise
    torch.testing.assert_close(y, (F.leaky_relu(pre, 0.2) * math.sqrt(2)).clamp(-0.7, 0.7))
    assert torch.equal(x, before)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_a_one_channel_1x1_conv_is_the_conv_with_its_gradients_and_stays_channels_last() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 1, 5, 5, requires_grad=True)
    w = torch.randn(8, 1, 1, 1, requires_grad=True)
    y = ops.conv2d_resample(x, w)
    reference = F.conv2d(x, w)
    torch.testing.assert_close(y, reference)
    assert y.is_contiguous(memory_format=torch.channels_last)
    upstream = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w), upstream)
    for grad, expected in zip(grads, torch.autograd.grad(reference, (x, w), upstream)):
        torch.testing.assert_close(grad, expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.conv2d_resample(x, w).dtype == torch.bfloat16


def test_float16_modulated_conv_is_prescaled_against_overflow() -> None:
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 8, 6, 6), torch.randn(4, 8, 3, 3) * 1e3, torch.randn(2, 8) * 1e3
    naive = F.conv2d((x * styles[:, :, None, None]).half(), weight.half(), padding=1)
    assert not torch.isfinite(naive).all()  # what the plain formula does in float16
    reference = ops.modulated_conv2d(x, weight, styles, padding=1)
    half = ops.modulated_conv2d(x.half(), weight.half(), styles, padding=1)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), reference, atol=1e-2, rtol=1e-2)
