"""GAN training throughput: real images consumed per second by ``GanTrainer.train_step``.

One step is a D step on B fakes and B reals, a G step through D, the G_ema update and, every
16th step, D's lazy R1 step; timing whole multiples of 16 steps amortises R1 exactly.
Cases:

- ``nvidia128``: NVIDIA's comparison configuration, as measured by the project with NVIDIA's
  code on these CPUs (23 img/s fp32, 39 img/s bf16): 128 channels at every resolution
  (channel_base 4096, channel_max 128), 32x32, z = w = 512, 2 mapping layers, G 'skip',
  D 'orig', batch 32, lazy R1; in fp32 and in bf16;
- ``gan_yaml``: configs/fashion_mnist/gan.yaml as it is, in bf16.

Real images are Fashion-MNIST's (28x28 zero-padded to 32x32, one channel). Writes
benchmarks/results/gan.json.

``--breakdown`` times the same steps once more, op by op (a dispatch mode that wraps every aten
call in a clock), and adds each op's share of the step and the convolutions' FLOP rate (torch's
own FLOP formulas). torch.profiler was not used for this: on these machines it doubles the step
and inflates the small elementwise ops several-fold, which misled an earlier reading.

``--compile`` runs G and D through torch.compile (inductor), R1 excepted: inductor has no double
backward, so D's lazy R1 step runs the same D eagerly. The compile is counted apart, in the warm-up.

``--device cuda`` times the same steps on a GPU (the breakdown is CPU-only: a GPU runs its ops
asynchronously, so a clock around each call measures the launch, not the work).

    python benchmarks/gan.py [--steps 16] [--cases nvidia128_fp32,nvidia128_bf16,gan_yaml_bf16] [--breakdown]
                             [--compile] [--device cpu|cuda] [--extra key=value ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from squeeze_span.allocator import keep_freed_memory
from squeeze_span.config import GanTrainingConfig, load_config
from squeeze_span.errors import ConfigError
from squeeze_span.experiments.bench import matmul_peak, synchronizer
from squeeze_span.runtime import machine_info, resolve_device
from squeeze_span.train.gan import GanTrainer

ROOT = Path(__file__).resolve().parents[1]
GAN_YAML = ROOT / "configs" / "fashion_mnist" / "gan.yaml"
NVIDIA_FIGURES = {"fp32": 23.0, "bf16": 39.0}  # img/s of NVIDIA's code on these CPUs, measured by the project
NVIDIA128 = [
    "generator.z_dim=512",
    "generator.w_dim=512",
    "generator.mapping_kwargs.num_layers=2",
    "generator.synthesis_kwargs.channel_base=4096",
    "generator.synthesis_kwargs.channel_max=128",
    "generator.synthesis_kwargs.architecture=skip",
    "discriminator.channel_base=4096",
    "discriminator.channel_max=128",
    "discriminator.architecture=orig",
    "discriminator.epilogue_kwargs.mbstd_group_size=32",
    "train.batch_size=32",
    "loss.r1_interval=16",
    "loss.r1_gamma=0.01",
    "augment.diffaugment=false",
]
CASES = {
    "nvidia128_fp32": (NVIDIA128, "fp32"),
    "nvidia128_bf16": (NVIDIA128, "bf16"),
    "gan_yaml_bf16": ([], "bf16"),
}


class OpClock(TorchDispatchMode):
    """Seconds and FLOPs per aten op (the op's own call; autograd's bookkeeping around it is not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: collections.Counter[str] = collections.Counter()
        self.flops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        start = time.perf_counter()
        out = func(*args, **kwargs)
        name = str(func.overloadpacket)
        self.seconds[name] += time.perf_counter() - start
        if func.overloadpacket in flop_registry:
            self.flops[name] += flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)
        return out


def breakdown(trainer: GanTrainer, steps: int, precision: str) -> dict[str, object]:
    """Each op's share of ``steps`` steps' wall time, and the convolutions' GFLOP/s against the matmul peak."""
    clock = OpClock()
    start = time.perf_counter()
    with clock:
        for _ in range(steps):
            trainer.train_step()
    total = time.perf_counter() - start
    convolutions = [name for name in clock.seconds if name.startswith("aten.convolution")]
    conv_seconds = sum(clock.seconds[name] for name in convolutions)
    return {
        "op_share": {name: seconds / total for name, seconds in clock.seconds.most_common(12)},
        "convolution_share": conv_seconds / total,
        "convolution_gflop_s": sum(clock.flops[name] for name in convolutions) / conv_seconds / 1e9,
        "matmul_peak_gflop_s": matmul_peak(torch.device("cpu"), precision) / 1e9,
    }


def compile_G_and_D(trainer: GanTrainer) -> None:
    """G and D through torch.compile; the R1 step swaps the eager D back in (no double backward in inductor)."""
    eager_D = trainer.D
    compiled_D = torch.compile(eager_D)
    trainer.G, trainer.D = torch.compile(trainer.G), compiled_D
    r1_step = trainer.r1_step

    def eager_r1_step(real: torch.Tensor) -> torch.Tensor:
        trainer.D = eager_D
        try:
            return r1_step(real)
        finally:
            trainer.D = compiled_D

    trainer.r1_step = eager_r1_step


def measure(
    overrides: list[str],
    precision: str,
    steps: int,
    warmup: int,
    output_dir: str,
    device: torch.device,
    op_breakdown: bool = False,
    compile_networks: bool = False,
) -> dict[str, object]:
    config = load_config(
        GAN_YAML,
        [
            *overrides,
            f"train.precision={precision}",
            f"train.device={device}",
            "train.progress=false",
            f"output_dir={output_dir}",
        ],
        GanTrainingConfig,
    )
    trainer = GanTrainer(config, command=["benchmark"])
    if compile_networks:
        compile_G_and_D(trainer)
    synchronize = synchronizer(device)
    start = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step()
    synchronize()
    warmup_seconds = time.perf_counter() - start
    # Start at a multiple of r1_interval so that the timed steps hold exactly steps / interval R1 steps.
    while trainer.step % config.loss.r1_interval:
        trainer.train_step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    synchronize()
    seconds = time.perf_counter() - start
    parameters = {name: sum(p.numel() for p in getattr(trainer, name).parameters()) for name in ("G", "D")}
    details = breakdown(trainer, steps, precision) if op_breakdown else {}
    return {
        **details,
        "images_per_s": steps * config.train.batch_size / seconds,
        "seconds": seconds,
        "warmup_seconds": warmup_seconds,
        "compiled": compile_networks,
        "steps": steps,
        "batch_size": config.train.batch_size,
        "precision": precision,
        "overrides": overrides,
        "parameters": parameters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16, help="timed steps per case (a multiple of 16 amortises R1)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--extra", nargs="*", default=[], help="key=value overrides for every case (exploring)")
    parser.add_argument("--breakdown", action="store_true", help="also time the steps op by op")
    parser.add_argument("--compile", action="store_true", help="G and D through torch.compile (R1 eager)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gan.json"))
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except ConfigError as error:
        parser.error(str(error))
    if args.breakdown and device.type != "cpu":
        parser.error("--breakdown times ops on the CPU only; drop it or use --device cpu")
    keep_freed_memory()  # as the CLI's train-gan does
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.cases.split(","):
            overrides, precision = CASES[name]
            result = measure(
                [*overrides, *args.extra],
                precision,
                args.steps,
                args.warmup,
                folder,
                device,
                args.breakdown,
                args.compile,
            )
            if name.startswith("nvidia128") and device.type == "cpu":  # NVIDIA's figures are these CPUs'
                result["nvidia_images_per_s"] = NVIDIA_FIGURES[precision]
                result["ratio_to_nvidia"] = result["images_per_s"] / NVIDIA_FIGURES[precision]
            results[name] = result
            print(f"{name}: {result['images_per_s']:.1f} img/s", flush=True)
            if args.breakdown:
                print(
                    f"  convolutions: {result['convolution_share']:.0%} of the step at "
                    f"{result['convolution_gflop_s']:.0f} GFLOP/s (matmul peak {result['matmul_peak_gflop_s']:.0f}); "
                    + ", ".join(f"{op} {share:.1%}" for op, share in list(result["op_share"].items())[:6]),
                    flush=True,
                )
    report = {"machine": machine_info(device), "config": str(GAN_YAML.relative_to(ROOT)), "cases": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
