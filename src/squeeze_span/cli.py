"""The `squeeze-span` command: parse arguments, build the objects, run.

A `UserError` (a missing file, a bad key, an unsafe pickle) is printed as one line
and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from squeeze_span.errors import UserError


def _probe(args: argparse.Namespace) -> None:
    from squeeze_span.data import load_dataset
    from squeeze_span.eval.probe import probe_backbone
    from squeeze_span.models import build_backbone, load_backbone
    from squeeze_span.runtime import resolve_device

    device = resolve_device(args.device)
    if args.random_init:
        torch.manual_seed(args.seed)
        in_channels = load_dataset(args.dataset, args.data, "test").num_channels
        backbone = build_backbone(args.random_init, in_channels=in_channels, width=args.width)
        name = f"{args.random_init} (width {args.width}, random init)"
    else:
        backbone = load_backbone(args.checkpoint)
        name = args.checkpoint
    result = probe_backbone(
        backbone,
        args.dataset,
        args.data,
        protocol=args.protocol,
        knn=args.knn,
        size=args.size,
        device=device,
        precision=args.precision,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    result["backbone"] = name
    rows = [("linear", result["linear"])] + ([("knn (k=200)", result["knn"])] if "knn" in result else [])
    print(f"\n{name} on {args.dataset} (test split, {result['image_size']} px, {args.protocol} protocol)")
    print(f"{'probe':<14}{'top-1':>8}{'top-5':>8}")
    for probe, accuracy in rows:
        print(f"{probe:<14}{accuracy['top1']:>8.2f}{accuracy['top5']:>8.2f}")
    print(f"{result['seconds']:.0f} s on {result['machine']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def build_parser() -> argparse.ArgumentParser:
    from squeeze_span.data import DATASETS
    from squeeze_span.models import BACKBONES

    parser = argparse.ArgumentParser(
        prog="squeeze-span",
        description="Distil a visual backbone from a pretrained GAN generator (Squeeze and Span).",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    probe = commands.add_parser(
        "probe",
        help="linear-probe (and kNN-probe) a frozen backbone on a labeled dataset",
        description="Probe a frozen backbone: features of a center view, then a linear classifier (and kNN).",
    )
    which = probe.add_mutually_exclusive_group(required=True)
    which.add_argument("checkpoint", nargs="?", help="a training checkpoint or an exported backbone (.safetensors)")
    which.add_argument("--random-init", metavar="ARCH", choices=sorted(BACKBONES), help="probe an untrained backbone")
    probe.add_argument("--width", type=int, default=16, help="base width of --random-init (16, the CPU default; paper: 64)")
    probe.add_argument("--dataset", required=True, choices=DATASETS)
    probe.add_argument("--data", metavar="ROOT", help="dataset root (default: data/<NAME> as in the original project)")
    probe.add_argument("--protocol", choices=("fast", "paper"), default="fast")
    probe.add_argument("--knn", action="store_true", help="also report weighted kNN accuracy (k=200, T=0.1)")
    probe.add_argument("--size", type=int, help="image size the backbone sees (default: the dataset's training size)")
    probe.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    probe.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="bf16")
    probe.add_argument("--batch-size", type=int, default=512)
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    probe.add_argument("--no-progress", action="store_true", help="hide progress bars")
    probe.set_defaults(run=_probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
