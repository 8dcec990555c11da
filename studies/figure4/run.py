"""The paper's Figure 4 at CPU scale: a student's accuracy against its teacher's quality.

    python studies/figure4/run.py runs/fashion_mnist/gan/snapshots [--steps 420] [key=value ...]

For every snapshot folder (network-snapshot-KIMG/, as `squeeze-span train-gan` writes them):
its FD-fashion_mnist-classifier (10,000 images each side), then Squeeze and Span trained with it
as the teacher for a fixed number of steps and probed on the validation split held out of
train. VICReg on the real images, for the same steps, is the line that needs no generator.
Each result is written to results/ as soon as it exists and is skipped when found, so the
sweep resumes where it stopped; results/figure4.png is redrawn after each one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from squeeze_span.data import load_dataset
from squeeze_span.demo import DemoSettings, train_and_probe
from squeeze_span.errors import UserError
from squeeze_span.eval.frechet import fd_extractor, generator_fd
from squeeze_span.eval.plots import accuracy_against_fd
from squeeze_span.generators import load_generator
from squeeze_span.runtime import machine_description

RESULTS = Path(__file__).resolve().parent / "results"
METRIC = "FD-fashion_mnist-classifier"


def snapshots(folder: Path) -> list[Path]:
    found = sorted(path for path in folder.glob("network-snapshot-*") if path.is_dir())
    if not found:
        raise UserError(f"{folder} holds no network-snapshot-*/ folders; pass the snapshots/ folder of a train-gan run")
    return found


def measure(name: str, method: str, teacher: Path | None, args: argparse.Namespace) -> dict:
    """Train, probe and (with a teacher) FD for one point, unless results/NAME.json has it already."""
    path = args.results / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    settings = DemoSettings(
        output_dir=f"runs/figure4/{args.results.name}/{name}",
        split="validation",
        overrides=tuple(args.overrides),
        progress=False,
        **({"teacher": str(teacher)} if teacher else {}),
    )
    result = {"name": name, "method": method, "steps": args.steps, "overrides": args.overrides}
    if teacher is not None:
        real = load_dataset("fashion_mnist", None, "train")
        extractor, _ = fd_extractor(real, "fashion_mnist")
        result["teacher"] = str(teacher)
        result["fd"] = generator_fd(load_generator(teacher), real, extractor, count=args.fd_images, progress=False)
    trained = train_and_probe(settings, method, None, args.steps)
    result.update(
        seconds=trained["seconds"], validation_top1=trained["top1"], machine=machine_description(torch.device("cpu"))
    )
    args.results.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshots", type=Path, help="the snapshots/ folder of a train-gan run")
    parser.add_argument("--steps", type=int, default=420, help="training steps of each student (420: 4 minutes here)")
    parser.add_argument("--fd-images", type=int, default=10000, help="images of each side of the FD")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON files and figure4.png go")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="for every student's config")
    args = parser.parse_intermixed_args()
    baseline = measure("vicreg_real", "vicreg_real", None, args)
    points = []
    for snapshot in snapshots(args.snapshots):
        kimg = int(snapshot.name.rsplit("-", 1)[1])
        result = measure(f"kimg{kimg:06d}", "squeeze_span", snapshot, args)
        points.append((result["fd"], result["validation_top1"], f"{kimg} kimg"))
        accuracy_against_fd(
            points,
            args.results / "figure4.png",
            metric=METRIC,
            baseline=(baseline["validation_top1"], "VICReg on real images"),
            title=f"Fashion-MNIST, {args.steps} steps a student, validation split",
        )


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        sys.exit(f"error: {error}")
