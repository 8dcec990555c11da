"""torch.compile on the student, A/B: VICReg's training step (the bench's ``vicreg`` case) with the
backbone and projector compiled by inductor, against the same step eager.

Counts the compile: the first two compiled steps' seconds are reported apart. Then both take
turns (``squeeze_span.experiments.bench.interleave``) and each reports the median of its timed steps.
Writes benchmarks/results/compile.json.

    python benchmarks/compile.py [--steps 8] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from squeeze_span.allocator import keep_freed_memory
from squeeze_span.data.stream import RealBatchStream
from squeeze_span.experiments.bench import BenchSettings, Student, interleave, load_bench_config, real_images
from squeeze_span.runtime import machine_info

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compile.json"))
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does
    torch.set_flush_denormal(True)
    config = load_bench_config(BenchSettings(batch=args.batch, precision="bf16"))  # as measured in RESULTS.md
    device = torch.device("cpu")
    dataset, _ = real_images(config, 4 * args.batch)
    stream = RealBatchStream(dataset, device, seed=0, on_device=True)
    eager = Student(config, 0.0, dataset, None, device)
    compiled = Student(config, 0.0, dataset, None, device)
    compiled.method.backbone = torch.compile(compiled.method.backbone)
    compiled.method.projector = torch.compile(compiled.method.projector)
    compiled_step = compiled.training_step(stream)
    start = time.perf_counter()
    compiled_step()
    compiled_step()
    compile_seconds = time.perf_counter() - start
    seconds = interleave({"eager": eager.training_step(stream), "compiled": compiled_step}, args.steps, 2)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    result = {
        "eager_img_s": args.batch / medians["eager"],
        "compiled_img_s": args.batch / medians["compiled"],
        "compiled_over_eager": medians["eager"] / medians["compiled"],
        "compile_and_first_two_steps_s": compile_seconds,
        "batch": args.batch,
        "precision": config.train.precision,
        "seconds_per_step": seconds,
        "machine": machine_info(device),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"VICReg step: eager {result['eager_img_s']:.1f} img/s, compiled {result['compiled_img_s']:.1f} img/s "
        f"({result['compiled_over_eager']:.3f}x); compile + 2 steps {compile_seconds:.1f} s; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
