"""Teacher throughput: StyleGAN2 generator images/s with the synthesis-block features taken.

The paper's CIFAR-10 generator (z = w = 512, 2 mapping layers, channel_base 32768,
channel_max 512, conv_clamp 256, 'skip', 32x32; 8.0 GFLOP per image) with random weights,
run as a Teacher runs it: ``G(z, c, noise_mode='const')`` without gradients, with forward
hooks on ``synthesis.b4 ... b32`` keeping every block's features ``x``. Measured in fp32 and
under bf16 autocast (the networks run channels_last in both), median of repeats after a
warm-up, and the best repeat (on a shared machine other jobs can halve a single run; the
best repeat is the closest to the machine's own speed); the two precisions take turns within
each repeat so load from other processes falls on both alike. Also records how far bf16 is from
fp32 on the ``tiny_uncond`` fixture (NVIDIA's reference outputs) when that fixture and the safe
pickle reader are present.

Writes benchmarks/results/teacher.json.

    .venv/bin/python benchmarks/teacher.py [--batch-sizes 64 128] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from squeeze_span.experiments.bench import interleave, synchronizer
from squeeze_span.generators.stylegan2 import CIFAR10_G_KWARGS, Generator, build_network
from squeeze_span.runtime import machine_info

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "stylegan2_ada"
# NVIDIA's stylegan2-ada-pytorch on this machine class (reference ops, 2 cores), as reported
# in the project's issue: 7.8 img/s fp32 with its fused modulated conv, 13.5 unfused; its
# bf16 autocast fails.
NVIDIA_FP32_IMAGES_PER_S = 7.8


def synthesis_gflop(G: Generator) -> float:
    """Multiply-adds x 2 of the synthesis convolutions per image (ToRGB included, FIR filters not)."""
    total = 0
    for res in G.synthesis.block_resolutions:
        block = getattr(G.synthesis, f"b{res}")
        for name in ("conv0", "conv1", "torgb"):
            layer = getattr(block, name, None)
            if layer is None:
                continue
            out_ch, in_ch, kh, kw = layer.weight.shape
            # An upsampling conv is a transposed conv: its flops are counted at the input resolution.
            pixels = (res // 2) ** 2 if getattr(layer, "up", 1) > 1 else res**2
            total += 2 * out_ch * in_ch * kh * kw * pixels
    return total / 1e9


def teacher_step(G: Generator, batch: int, precision: str, device: torch.device):
    """A closure generating one batch with features, the way a Teacher does."""
    features: dict[str, torch.Tensor] = {}
    for res in G.synthesis.block_resolutions:
        name = f"b{res}"
        getattr(G.synthesis, name).register_forward_hook(
            lambda module, args, output, name=name: features.__setitem__(name, output[0])
        )
    z = torch.randn([batch, G.z_dim], device=device)
    c = torch.zeros([batch, G.c_dim], device=device)
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def step() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None),
        ):
            G(z, c, noise_mode="const")
        assert len(features) == len(G.synthesis.block_resolutions)

    return step


def measure(device: torch.device, batch_sizes: list[int], precisions: list[str], repeats: int) -> list[dict]:
    results = []
    for batch in batch_sizes:
        generators = {p: Generator(**CIFAR10_G_KWARGS).to(device).eval().requires_grad_(False) for p in precisions}
        for G in generators.values():
            G.load_state_dict(next(iter(generators.values())).state_dict())
        steps = {p: teacher_step(generators[p], batch, p, device) for p in precisions}
        # One warm-up call each: oneDNN picks and caches its kernels on the first call.
        times = interleave(steps, repeats, warmup=1, synchronize=synchronizer(device))
        for precision in precisions:
            seconds = statistics.median(times[precision])
            images_per_s = batch / seconds
            best_images_per_s = batch / min(times[precision])
            results.append(
                {
                    "batch": batch,
                    "precision": precision,
                    "seconds_per_batch": seconds,
                    "images_per_s": images_per_s,
                    "gflop_per_s": images_per_s * synthesis_gflop(generators[precision]),
                    "ratio_to_nvidia_fp32": images_per_s / NVIDIA_FP32_IMAGES_PER_S,
                    "best_images_per_s": best_images_per_s,
                    "best_ratio_to_nvidia_fp32": best_images_per_s / NVIDIA_FP32_IMAGES_PER_S,
                    "all_seconds": times[precision],
                }
            )
            print(
                f"batch {batch:4d} {precision}: median {images_per_s:6.1f} img/s, best {best_images_per_s:6.1f} img/s",
                flush=True,
            )
    return results


def conv_ceiling(device: torch.device, repeats: int) -> dict[str, float]:
    """GFLOP/s of the network's dominant op alone (b32.conv1: 512->512 3x3 at 32x32, batch 64).

    The generator cannot run faster than its 8.0 GFLOP per image at this rate, so this bounds
    the achievable images/s on the machine, whatever the implementation around the convs.
    """
    data = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.randn(64, 512, 32, 32, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        data[precision] = (x, torch.randn(512, 512, 3, 3, device=device, dtype=dtype))
    convolutions = {
        precision: (lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1)) for precision, (x, w) in data.items()
    }
    with torch.inference_mode():
        times = interleave(convolutions, repeats, warmup=1, synchronize=synchronizer(device))
    flop = 2 * 512 * 512 * 9 * 32 * 32 * 64
    result = {f"{p}_best_gflop_per_s": flop / min(t) / 1e9 for p, t in times.items()}
    result.update({f"{p}_median_gflop_per_s": flop / statistics.median(t) / 1e9 for p, t in times.items()})
    return result


def fixture_precision_error() -> dict | None:
    """Max abs error of bf16 autocast against NVIDIA's fp32 outputs on the tiny_uncond fixture."""
    pkl, expected_path = FIXTURES / "tiny_uncond.pkl", FIXTURES / "tiny_uncond_expected.pt"
    if not (pkl.exists() and expected_path.exists()):
        return None
    from squeeze_span.generators.safe_pickle import read_stylegan2_pkl

    data = read_stylegan2_pkl(pkl)
    expected = torch.load(expected_path, weights_only=True)
    nets = {
        k: build_network(data[k].class_name, data[k].init_kwargs, data[k].init_args, data[k].state_dict)
        for k in ("G_ema", "D")
    }
    G, D = nets["G_ema"], nets["D"]
    z, c = expected["z"], expected["c"]
    errors = {}
    for precision in ("fp32", "bf16"):
        features: dict[str, torch.Tensor] = {}
        hooks = [
            getattr(G.synthesis, name).register_forward_hook(
                lambda m, a, o, name=name, store=features.__setitem__: store(name, o[0])
            )
            for name in expected["block_names"]
        ]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            img = G(z, c, noise_mode="const").float()
            logits = D(expected["d_input"], c).float()
        for hook in hooks:
            hook.remove()
        errors[precision] = {
            "img_const_max_abs": (img - expected["img_const"]).abs().max().item(),
            "img_const_range": expected["img_const"].abs().max().item(),
            "block_max_abs_relative_to_block_max": {
                name: (
                    (features[name].float() - expected[f"block_{name}"]).abs().max()
                    / expected[f"block_{name}"].abs().max()
                ).item()
                for name in expected["block_names"]
            },
            "d_logits_real_max_abs": (logits - expected["d_logits_real"]).abs().max().item(),
        }
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "teacher.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    ceiling = conv_ceiling(device, max(args.repeats, 9))
    print(f"conv ceiling (b32.conv1 alone): {ceiling}", flush=True)
    results = measure(device, args.batch_sizes, args.precisions, args.repeats)
    report = {
        "machine": machine_info(device),
        "config": CIFAR10_G_KWARGS,
        "synthesis_gflop_per_image": synthesis_gflop(Generator(**CIFAR10_G_KWARGS)),
        "nvidia_fp32_images_per_s": NVIDIA_FP32_IMAGES_PER_S,
        "results": results,
        "conv_3x3_512_at_32x32": ceiling,
        "fixture_error_vs_nvidia_fp32": fixture_precision_error(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["fixture_error_vs_nvidia_fp32"], indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
