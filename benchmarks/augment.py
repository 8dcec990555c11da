"""Our batched augmentation against a kornia pipeline of the same semantics, on CPU.

Three recipes (CIFAR 32x32 at batch 256 without blur; STL-10 96x96 at batch 64 with
blur; 1-channel Fashion-MNIST 28 -> 32 at batch 256), each in fp32 and under bf16
autocast with channels_last input. Reports images/s (median of repeats after a
warm-up) and the ratio ours/kornia measured in the same run, and writes
benchmarks/results/augment.json.

    .venv/bin/python benchmarks/augment.py [--seconds 2.0] [--output benchmarks/results/augment.json]

kornia is in the optional ``bench`` extra; without it only our numbers are measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from squeeze_span.data.augment import BatchAugmentation, blur_kernel_size, to_unit_range
from squeeze_span.experiments.bench import interleave
from squeeze_span.runtime import machine_info

CASES = (
    # name, batch, channels, input size, output size, blur probability
    ("cifar10 32x32", 256, 3, 32, 32, 0.0),
    ("stl10 96x96", 64, 3, 96, 96, 0.5),
    ("fashion_mnist 28->32", 256, 1, 28, 32, 0.0),
)
MEAN_STD = {3: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), 1: ((0.2860,), (0.3530,))}


def kornia_pipeline(channels: int, size: int, blur_prob: float, mean, std) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same recipe in kornia: independent parameters per image, fixed color order."""
    import kornia.augmentation as K

    steps = [K.RandomResizedCrop((size, size), scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), same_on_batch=False)]
    if channels == 3:
        steps.append(K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8, order=(0, 1, 2, 3), same_on_batch=False))
        steps.append(K.RandomGrayscale(p=0.2, same_on_batch=False))
    else:
        steps.append(K.ColorJitter(0.4, 0.4, 0.0, 0.0, p=0.8, order=(0, 1), same_on_batch=False))
    if blur_prob > 0:
        kernel = blur_kernel_size(size)
        steps.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=blur_prob, same_on_batch=False))
    steps.append(K.RandomHorizontalFlip(p=0.5, same_on_batch=False))
    steps.append(K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)))
    pipeline = K.AugmentationSequential(*steps)

    def run(images: torch.Tensor) -> torch.Tensor:
        return pipeline(to_unit_range(images)).float()

    return run


def measure(functions: dict[str, Callable[[], torch.Tensor]], seconds: float) -> dict[str, float]:
    """Median seconds per call of each function, after a warm-up.

    The functions take turns within each repeat, so load from other processes on a
    shared machine falls on all of them alike and their ratio stays meaningful.
    """
    once = interleave(functions, steps=1, warmup=1)
    repeats = max(5, min(50, int(seconds / max(sum(t for (t,) in once.values()), 1e-6))))
    times = interleave(functions, steps=repeats, warmup=0)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "augment.json")
    args = parser.parse_args()

    try:
        import kornia

        kornia_version = kornia.__version__
    except ImportError:
        kornia_version = None

    results = []
    for name, batch, channels, in_size, out_size, blur_prob in CASES:
        mean, std = MEAN_STD[channels]
        ours = BatchAugmentation(out_size, mean, std, blur_prob=blur_prob)
        images = torch.randint(0, 256, (batch, channels, in_size, in_size), dtype=torch.uint8)
        kornia_run = kornia_pipeline(channels, out_size, blur_prob, mean, std) if kornia_version else None
        for precision in ("fp32", "bf16+channels_last"):
            inputs = images.contiguous(memory_format=torch.channels_last) if precision != "fp32" else images
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "fp32")
            row: dict[str, object] = {"case": name, "batch": batch, "precision": precision}
            generator = torch.Generator().manual_seed(0)

            def run_ours(ours=ours, autocast=autocast, inputs=inputs, generator=generator) -> torch.Tensor:
                with autocast:
                    return ours(inputs, generator)

            functions: dict[str, Callable[[], torch.Tensor]] = {"ours": run_ours}
            if kornia_run is not None:

                def run_kornia(autocast=autocast, inputs=inputs, kornia_run=kornia_run) -> torch.Tensor:
                    with autocast:
                        return kornia_run(inputs)

                try:
                    run_kornia()
                    functions["kornia"] = run_kornia
                except Exception as error:  # kornia failing under autocast is a result to record
                    row["kornia_error"] = f"{type(error).__name__}: {error}"
                    traceback.print_exc()
            seconds = measure(functions, args.seconds)
            row["ours_images_per_s"] = batch / seconds["ours"]
            if "kornia" in seconds:
                row["kornia_images_per_s"] = batch / seconds["kornia"]
                row["ratio_ours_over_kornia"] = row["ours_images_per_s"] / row["kornia_images_per_s"]
            results.append(row)
            print(json.dumps(row))

    report = {"machine": machine_info(), "kornia": kornia_version, "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
