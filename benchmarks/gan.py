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

    python benchmarks/gan.py [--steps 16] [--cases nvidia128_fp32,nvidia128_bf16,gan_yaml_bf16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from squeeze_span.allocator import keep_freed_memory
from squeeze_span.config import GanTrainingConfig, load_config
from squeeze_span.runtime import machine_info
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


def measure(overrides: list[str], precision: str, steps: int, warmup: int, output_dir: str) -> dict[str, object]:
    config = load_config(
        GAN_YAML,
        [
            *overrides,
            f"train.precision={precision}",
            "train.device=cpu",
            "train.progress=false",
            f"output_dir={output_dir}",
        ],
        GanTrainingConfig,
    )
    trainer = GanTrainer(config, command=["benchmark"])
    for _ in range(warmup):
        trainer.train_step()
    # Start at a multiple of r1_interval so that the timed steps hold exactly steps / interval R1 steps.
    while trainer.step % config.loss.r1_interval:
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    seconds = time.perf_counter() - start
    parameters = {name: sum(p.numel() for p in getattr(trainer, name).parameters()) for name in ("G", "D")}
    return {
        "images_per_s": steps * config.train.batch_size / seconds,
        "seconds": seconds,
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
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gan.json"))
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI's train-gan does
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.cases.split(","):
            overrides, precision = CASES[name]
            result = measure([*overrides, *args.extra], precision, args.steps, args.warmup, folder)
            if name.startswith("nvidia128"):
                result["nvidia_images_per_s"] = NVIDIA_FIGURES[precision]
                result["ratio_to_nvidia"] = result["images_per_s"] / NVIDIA_FIGURES[precision]
            results[name] = result
            print(f"{name}: {result['images_per_s']:.1f} img/s", flush=True)
    report = {"machine": machine_info(torch.device("cpu")), "config": str(GAN_YAML.relative_to(ROOT)), "cases": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
