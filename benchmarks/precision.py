"""bf16 autocast against fp32 on this machine, A/B: the bare student step and VICReg's training step
(the bench's ``student`` and ``vicreg`` cases) in each precision, and the fp32 student step in the
plain (NCHW) layout against channels_last, taking turns in one process, with a matmul in each
precision beside them. It says what ``precision=auto`` picks here and whether that is
the faster of the two. On a CPU without bf16 hardware, bf16 runs its products in fp32 kernels
(squeeze_span.runtime.Bf16ProductsInFp32Kernels); the two steps also run with torch's own bf16
kernels there, to show what that gives. Writes benchmarks/results/precision.json.

    python benchmarks/precision.py [--steps 4] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from squeeze_span import runtime
from squeeze_span.allocator import keep_freed_memory
from squeeze_span.data.stream import RealBatchStream
from squeeze_span.experiments.bench import (
    BenchSettings,
    Student,
    interleave,
    load_bench_config,
    matmul_peak,
    real_images,
)
from squeeze_span.runtime import machine_info, native_bf16, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision.json"))
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does
    torch.set_flush_denormal(True)
    device = torch.device("cpu")
    cases = {}
    for precision in PRECISIONS:
        config = load_bench_config(BenchSettings(batch=args.batch, precision=precision))
        dataset, _ = real_images(config, 4 * args.batch)
        stream = RealBatchStream(dataset, device, seed=0, on_device=True)
        cases[f"student_{precision}"] = Student(config, 0.0, dataset, None, device).bare_step(args.batch)
        cases[f"vicreg_{precision}"] = Student(config, 0.0, dataset, None, device).training_step(stream)
        if precision == "bf16" and not native_bf16(device):
            for case in ("student", "vicreg"):
                cases[f"{case}_bf16_torch_kernels"] = with_torch_bf16_kernels(cases[f"{case}_bf16"])
    # and fp32 in the plain layout, to show what channels_last gives (conv_memory_format keeps it where safe)
    fp32 = load_bench_config(BenchSettings(batch=args.batch, precision="fp32"))
    plain = Student(fp32, 0.0, dataset, None, device)
    plain.method.memory_format = torch.contiguous_format
    plain.method.backbone.to(memory_format=torch.contiguous_format)
    cases["student_fp32_nchw"] = plain.bare_step(args.batch)
    seconds = interleave(cases, args.steps, 1)
    img_s = {name: args.batch / statistics.median(values) for name, values in seconds.items()}
    auto = resolve_precision("auto", device)
    result = {
        "img_s": img_s,
        "bf16_over_fp32": {case: img_s[f"{case}_bf16"] / img_s[f"{case}_fp32"] for case in ("student", "vicreg")},
        "torch_bf16_kernels_over_fp32": {
            case: img_s[f"{case}_bf16_torch_kernels"] / img_s[f"{case}_fp32"]
            for case in ("student", "vicreg")
            if f"{case}_bf16_torch_kernels" in img_s
        },
        "channels_last_over_nchw_fp32": img_s["student_fp32"] / img_s["student_fp32_nchw"],
        # 1024-cube, 3 repeats: an emulated bf16 matmul of 2048 takes about a minute
        "matmul_gflop_s": {p: matmul_peak(device, p, size=1024, repeats=3) / 1e9 for p in PRECISIONS},
        "native_bf16": native_bf16(device),
        "auto_picks": auto,
        "auto_is_faster": img_s[f"vicreg_{auto}"] >= max(img_s[f"vicreg_{p}"] for p in PRECISIONS),
        "batch": args.batch,
        "seconds_per_step": seconds,
        "machine": machine_info(device),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    ratios = ", ".join(f"{case} {ratio:.2f}x" for case, ratio in result["bf16_over_fp32"].items())
    if result["torch_bf16_kernels_over_fp32"]:
        torch_kernels = ", ".join(f"{c} {r:.2f}x" for c, r in result["torch_bf16_kernels_over_fp32"].items())
        ratios += f" (products in fp32 kernels; torch's own bf16 kernels: {torch_kernels})"
    print(
        f"bf16 over fp32 (img/s): {ratios}; fp32 student channels_last over NCHW "
        f"{result['channels_last_over_nchw_fp32']:.2f}x; matmul {result['matmul_gflop_s']['bf16']:.0f} against "
        f"{result['matmul_gflop_s']['fp32']:.0f} GFLOP/s; auto picks {auto} "
        f"({'the faster' if result['auto_is_faster'] else 'NOT the faster'}); wrote {args.out}"
    )


def with_torch_bf16_kernels(step: Callable[[], object]) -> Callable[[], None]:
    """``step`` with autocast's own bf16 kernels: as if the CPU had bf16 hardware, so that autocast
    leaves out Bf16ProductsInFp32Kernels."""

    def run() -> None:
        with mock.patch.object(runtime, "_cpu_native_bf16", lambda: True):
            step()

    return run


if __name__ == "__main__":
    main()
