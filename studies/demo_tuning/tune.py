"""Tune the demo on a validation split held out of Fashion-MNIST's train set; test is never read.

    python studies/demo_tuning/tune.py NAME --method squeeze_span --steps 420 [key=value ...]

trains one of the demo's methods for a wall-clock budget with the overrides, probes it with
the fast linear probe on the validation split (``squeeze_span.data.split_validation``), and
writes ``results/NAME.json``. RESULTS.md records what the runs showed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from squeeze_span.demo import RUNS, DemoSettings, train_and_probe
from squeeze_span.errors import UserError
from squeeze_span.runtime import machine_description

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the run's name: results/NAME.json")
    parser.add_argument("--method", choices=sorted(RUNS), required=True)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="a wall-clock budget, calibrated as the demo does")
    budget.add_argument("--steps", type=int, help="a fixed number of steps: results that do not depend on the load")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()
    settings = DemoSettings(
        minutes=args.minutes or 0.0,
        output_dir=f"runs/tuning/{args.name}",
        split="validation",
        overrides=tuple(args.overrides),
        progress=False,
    )
    trained = train_and_probe(settings, args.method, args.minutes and args.minutes * 60, args.steps)
    result = {
        "name": args.name,
        "method": args.method,
        "minutes": args.minutes,
        "fixed_steps": args.steps,
        "overrides": args.overrides,
        "steps": trained["steps"],
        "seconds": trained["seconds"],
        "validation_top1": trained["top1"],
        "machine": machine_description(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        sys.exit(f"error: {error}")
