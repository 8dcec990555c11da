"""Where the length study's primary protocol gets its noise (issue 20): the linear probe on 10 labels a class.

    python studies/few_label_noise/measure.py [--draws 25] [ENTRY ...]

The pre-registered primary protocol (results/fashion_mnist/length/FINDINGS.md) is the noisiest of the
five on trained rows. Two suspects: the 5 draws of labelled images (each backbone's score moves with
the draw in its own way, which pairing by draw cannot cancel), and the weight decay that 5-fold
cross-validation picks inside 100 images (20 held out a fold: ties are common, and a tie goes to the
weakest decay). For each finished run of the length plan whose backbone is at hand (its run folder, else
the kept .safetensors beside its result), this extracts the features once, as the sweep
did, and for draws 0..D-1 records each decay's cross-validation score inside the labelled subset (all
the protocol chooses by) and, for diagnosis only, each decay's test top-1. No verdict is taken from the
test-chosen decay. Writes results/ENTRY_seedS.json; analyse.py turns them into RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from squeeze_span.errors import UserError
from squeeze_span.eval.features import extract_features
from squeeze_span.eval.few_labels import cross_validation_scores, draw_labelled, folds_of
from squeeze_span.eval.linear import WEIGHT_DECAY_GRID, fit_logistic_regression, standardize
from squeeze_span.eval.metrics import topk_accuracy
from squeeze_span.eval.probe import evaluation_sets, view_settings
from squeeze_span.experiments.plan import load_plan
from squeeze_span.methods.registry import load_training_config
from squeeze_span.models import load_backbone
from squeeze_span.runtime import machine_description

PLAN = "results/fashion_mnist/length/plan.yaml"
LABELS_PER_CLASS = 10
RESULTS = Path(__file__).resolve().parent / "results"


def backbones(plan_path: str, names: list[str]) -> list[tuple[str, int, Path, str]]:
    """(entry, seed, where its backbone is, its precision) for every finished trained run of the plan."""
    plan = load_plan(plan_path)
    found = []
    for entry in plan.entries:
        if entry.kind != "train" or (names and entry.name not in names):
            continue
        precision = load_training_config(entry.config, [*plan.overrides, *entry.overrides]).train.precision
        for path in sorted((Path(plan.results_dir) / entry.name).glob("seed*.json")):
            kept, run = path.with_suffix(".safetensors"), Path(plan.runs_dir) / entry.name / path.stem
            source = run if run.exists() else kept  # as the sweep: the run's own weights, else the bf16 file
            if source.exists():
                found.append((entry.name, json.loads(path.read_text())["seed"], source, precision))
    return found


def measure(source: Path, precision: str, draws: int) -> dict:
    backbone = load_backbone(source)
    train_set, test_set = evaluation_sets("fashion_mnist", None, "test")
    size, _, mean, std = view_settings(backbone, "fashion_mnist", train_set, None, "backbone")
    settings = dict(size=size, mean=mean, std=std, device=torch.device("cpu"), precision=precision, progress=False)
    train_x, train_y = extract_features(backbone.to(memory_format=torch.channels_last), train_set, **settings)
    test_x, test_y = extract_features(backbone.to(memory_format=torch.channels_last), test_set, **settings)
    train_x, test_x = standardize(train_x.double(), test_x.double())
    classes = len(train_set.classes)
    records = []
    for draw in range(draws):
        chosen = draw_labelled(train_y, LABELS_PER_CLASS, draw)
        x, y = train_x[chosen], train_y[chosen]
        cross_validation = cross_validation_scores(x, y, classes, folds_of(len(chosen), LABELS_PER_CLASS))
        test = {}
        for decay in WEIGHT_DECAY_GRID:  # cold fits, as the protocol refits its chosen decay
            classifier = fit_logistic_regression(x, y, classes, decay)
            with torch.no_grad():
                test[decay] = topk_accuracy(classifier(test_x), test_y, ks=(1,))["top1"]
        records.append({"draw": draw, "cross_validation": _keyed(cross_validation), "test": _keyed(test)})
    return {"draws": records}


def _keyed(scores: dict[float, float]) -> dict[str, float]:
    return {repr(decay): score for decay, score in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="*", help="the plan's entries (default: every finished trained one)")
    parser.add_argument("--draws", type=int, default=25)
    parser.add_argument("--plan", default=PLAN)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for name, seed, source, precision in backbones(args.plan, args.entries):
        target = RESULTS / f"{name}_seed{seed}.json"
        if target.is_file() and len(json.loads(target.read_text())["draws"]) >= args.draws:
            continue
        record = {"entry": name, "seed": seed, "backbone": str(source), "precision": precision}
        record.update(measure(source, precision, args.draws), machine=machine_description())
        target.write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name} seed {seed}: {args.draws} draws", flush=True)


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        sys.exit(f"measure: {error}")
