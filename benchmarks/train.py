"""Training throughput: a Squeeze and Span step against the bare student step, same batch and precision.

The bare student step is what any method pays at least: forward and backward of the
backbone and projector on B images, and an SGD update. The Squeeze and Span step adds
the teacher's rendering of B_s images with their features, T_phi, the augmentation of
every view, and the real branch's second view.

Runs the CPU-scale Fashion-MNIST config (ResNet-18 CIFAR stem, width 16) with a random
StyleGAN2 teacher of the embedded default's size (32x32, 128 channels per block), and
writes benchmarks/results/train.json.

    python benchmarks/train.py [--batch-size 256] [--steps 6] [--device cpu] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from squeeze_span.cli import load_training_config
from squeeze_span.generators import save_network
from squeeze_span.generators.stylegan2 import Generator
from squeeze_span.methods import METHODS
from squeeze_span.runtime import autocast, machine_info
from squeeze_span.train import Trainer

TEACHER = dict(
    z_dim=128,
    c_dim=0,
    w_dim=128,
    img_resolution=32,
    img_channels=1,
    mapping_kwargs={"num_layers": 2},
    synthesis_kwargs={"channel_base": 4096, "channel_max": 128},
)


def build(teacher_dir: Path, syn_ratio: float, args) -> Trainer:
    overrides = [
        f"teacher.path={teacher_dir}",
        f"method.syn_ratio={syn_ratio}",
        f"train.batch_size={args.batch_size}",
        f"train.precision={args.precision}",
        f"train.device={args.device}",
        "train.progress=false",
        f"output_dir={teacher_dir.parent / 'run'}",
    ]
    config = load_training_config("configs/fashion_mnist/squeeze_span.yaml", overrides)
    return Trainer(config, METHODS[config.method.name], command=["benchmark"])


def squeeze_span_step(trainer: Trainer):
    def step() -> None:
        real = trainer.stream.next(trainer.real)
        with autocast(trainer.device, trainer.config.train.precision):
            loss = trainer.model(real, trainer.synthetic)["loss"]
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    return step


def bare_student_step(trainer: Trainer):
    method = trainer.method
    size = trainer.augmentation.size
    views = torch.randn(
        trainer.config.train.batch_size, trainer.dataset.num_channels, size, size, device=trainer.device
    ).contiguous(memory_format=torch.channels_last)
    # A fixed target: the loss then has a non-zero optimum, so the weights never shrink to denormals.
    target = torch.randn(trainer.config.train.batch_size, method.projector[-1].out_features, device=trainer.device)

    def step() -> None:
        with autocast(trainer.device, trainer.config.train.precision):
            z = method.projector(method.backbone(views)).float()
        trainer.optimizer.zero_grad(set_to_none=True)
        (z - target).square().mean().backward()
        trainer.optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/train.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        teacher_dir = Path(folder) / "teacher"
        save_network(Generator(**TEACHER), teacher_dir, "G_ema")
        squeeze_span = build(teacher_dir, 0.5, args)
        span_only = build(teacher_dir, 0.0, args)
        cases = {
            "bare student step": bare_student_step(squeeze_span),
            "span only (VICReg, alpha=0)": squeeze_span_step(span_only),
            "squeeze and span (alpha=0.5)": squeeze_span_step(squeeze_span),
        }
        for step in cases.values():  # warm-up: one-time kernel selection
            step()
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):  # interleaved, so that load on the machine falls on every case alike
            for name, step in cases.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                if squeeze_span.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - start) / args.steps)

    bare = statistics.median(times["bare student step"])
    results = []
    for name, values in times.items():
        seconds = statistics.median(values)
        results.append(
            {
                "case": name,
                "seconds_per_step": seconds,
                "images_per_s": args.batch_size / seconds,
                "time_relative_to_bare_step": seconds / bare,
            }
        )
        print(f"{name:32s} {args.batch_size / seconds:8.0f} img/s  {seconds / bare:5.2f}x the bare step's time")
    report = {
        "machine": machine_info(squeeze_span.device),
        "batch_size": args.batch_size,
        "precision": args.precision,
        "device": str(squeeze_span.device),
        "teacher": TEACHER,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
