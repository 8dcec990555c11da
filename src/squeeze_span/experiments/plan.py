"""A sweep plan: the list of runs behind a report, as one YAML file.

Every entry is one row of the report (a method on some data, or a probe of something that
is not trained), run once per seed::

    dataset: fashion_mnist
    overrides: [train.max_steps=500]          # for every training entry
    entries:
      - name: vicreg_real
        config: configs/fashion_mnist/vicreg_real.yaml
        seeds: [0, 1, 2]
        tables: {"2": "VICReg, real"}         # table -> the row's label there
      - name: d_multi
        kind: discriminator
        model: asset:fashion_mnist_stylegan2
        features: multi
        tables: {"1": "discriminator, multi feature"}

The kinds:

- ``train``: train ``config`` (with the plan's and the entry's overrides, the seed and
  ``resume=auto``), then probe its backbone. ``fd: true`` also measures the FD of its teacher
  (Figure 4); ``discrepancy: true`` the FD between its student's features of generated and of
  real images (the poster's representation discrepancy);
- ``random_init`` and ``pixels``: probe an untrained backbone built as ``config`` builds it, or
  the raw pixels;
- ``discriminator``: probe the features of ``model``'s discriminator (``features``: single or multi).

An entry's ``split: validation`` scores its probe on a held-out split of train instead of the
plan's split: for choosing a setting (a learning rate, say) without looking at test.

The order of the runs: entries of a lower ``stage`` first; within a stage, seed by seed (every
entry's first seed, then every entry's second), so that a method and the baseline listed beside it
finish together and each finished seed is already a comparison.

How the report reads a row (none of these changes a result, so none is part of its spec):
``row`` is the name the paper's claims know it by (``squeeze``, ``vicreg_syn``, ...; default: the
entry's name), and ``variant`` sets a row apart from the default setting ("fp32", "width 32"):
the claims are judged for each training length and variant among the rows that share them.
``keep_backbone: true`` keeps the trained backbone (bf16 safetensors) beside the result, so that
a later probe can score it again without training it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from squeeze_span.config import bounded, choice, load_config, to_dict
from squeeze_span.errors import ConfigError

KINDS = ("train", "random_init", "pixels", "discriminator")
# Entry fields that say how a result is run in turn or read, not what it is: not part of its spec.
PRESENTATION = ("seeds", "tables", "split", "stage", "row", "variant", "keep_backbone")


@dataclass
class PlanEntry:
    name: str = ""  # unique; names the run folders and the result files
    kind: str = choice("train", KINDS)
    config: Optional[str] = None  # a training config (train, random_init)
    overrides: List[str] = field(default_factory=list)  # key=value, after the plan's
    seeds: Optional[List[int]] = None  # None: the plan's seeds
    tables: Dict[str, str] = field(default_factory=dict)  # table ("1", "2", "3", "figure4", ...) -> row label
    model: Optional[str] = None  # discriminator: a GAN with a D (pickle, convert-gan folder, snapshot, asset)
    features: str = choice("multi", ("single", "multi"))  # discriminator: b4.fc alone, or every block
    fd: bool = False  # train: also the FD of the run's teacher against the real train images
    discrepancy: bool = False  # train: also the FD of its student's features, generated against real images
    split: Optional[str] = None  # the probe's evaluation split; None: the plan's (validation: for choosing settings)
    stage: int = 0  # lower stages run first
    row: Optional[str] = None  # the claims' name for this row; None: the entry's name
    variant: str = ""  # a setting that sets this row apart from the default one ("fp32"); claims compare within one
    keep_backbone: bool = False  # train: keep the backbone (bf16 safetensors) beside the result


@dataclass
class SweepPlan:
    dataset: str = "fashion_mnist"  # the probes' dataset
    data_root: Optional[str] = None  # None: the dataset's default folder
    runs_dir: str = "runs/sweep"  # run folders (checkpoints: not for git)
    results_dir: str = "results/sweep/runs"  # one JSON per finished (entry, seed): small, for git
    overrides: List[str] = field(default_factory=list)  # key=value for every training entry
    seeds: List[int] = field(default_factory=lambda: [0])
    split: str = choice("test", ("test", "validation"))  # the probe's evaluation split
    fd_images: int = bounded(10000, min=2)  # images a side for the FD and the discrepancy
    discrepancy_teacher: Optional[str] = None  # generated images for a run without a teacher
    # The probe protocols every result records beside the linear probe on every label (added to
    # finished results whose model is kept, so they are not part of a result's spec):
    knn_ks: List[int] = field(default_factory=lambda: [20, 200])  # weighted kNN, each k
    labels_per_class: List[int] = field(default_factory=lambda: [10, 100])  # few-label linear probes
    draws: int = bounded(5, min=1)  # fixed draws of the labelled images for each few-label probe
    # The protocol whose verdicts the report states first ("linear", "linear_10", "knn_20", ...):
    # chosen on how far it sets the floors from the ceiling, before looking at the method rows.
    primary_protocol: str = "linear"
    # Draws for the primary protocol's few-label probe, when it is one: its verdicts are read there, and a
    # 10-label probe's spread over 5 draws made half its seed noise (studies/few_label_noise). None: draws.
    primary_draws: Optional[int] = None
    entries: List[PlanEntry] = field(default_factory=list)


def load_plan(path: str | os.PathLike[str]) -> SweepPlan:
    """The plan in ``path``, checked: unique names, and what each kind needs."""
    plan = load_config(path, [], SweepPlan)
    if any(k < 1 for k in plan.knn_ks):
        raise ConfigError(f"{path}: knn_ks {plan.knn_ks} must be neighbour counts of at least 1")
    if plan.primary_draws is not None and plan.primary_draws < 1:
        raise ConfigError(f"{path}: primary_draws {plan.primary_draws} must be at least 1, or left out")
    if any(n < 2 for n in plan.labels_per_class):
        raise ConfigError(f"{path}: labels_per_class {plan.labels_per_class} must be at least 2 (cross-validated)")
    seen: set[str] = set()
    for index, entry in enumerate(plan.entries):
        where = f"{path}: entries[{index}]"
        if not entry.name or not entry.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{where} needs a name of letters, digits, '_' and '-' (it names files)")
        if entry.name in seen:
            raise ConfigError(f"{where}: the name {entry.name!r} is used twice; each entry needs its own")
        seen.add(entry.name)
        if entry.kind in ("train", "random_init") and not entry.config:
            raise ConfigError(f"{where} ({entry.name}): kind {entry.kind} needs config: a training config file")
        if entry.kind == "discriminator" and not entry.model:
            raise ConfigError(f"{where} ({entry.name}): kind discriminator needs model: a GAN that has a D")
        if (entry.fd or entry.discrepancy) and entry.kind != "train":
            raise ConfigError(f"{where} ({entry.name}): fd and discrepancy are measured on train entries only")
        if entry.split not in (None, "test", "validation"):
            raise ConfigError(f"{where} ({entry.name}): split {entry.split!r} must be test or validation")
        if entry.seeds is not None and not entry.seeds:
            raise ConfigError(f"{where} ({entry.name}): seeds is empty; remove it for the plan's seeds")
    return plan


def draws_for(plan: SweepPlan, labels_per_class: int) -> int:
    """How many draws of labelled images the few-label probe on ``labels_per_class`` takes."""
    primary = plan.primary_protocol == f"linear_{labels_per_class}"
    return plan.primary_draws if primary and plan.primary_draws is not None else plan.draws


def seeds_of(plan: SweepPlan, entry: PlanEntry) -> list[int]:
    return list(entry.seeds if entry.seeds is not None else plan.seeds)


def row_of(entry: PlanEntry) -> str:
    return entry.row or entry.name


def split_of(plan: SweepPlan, entry: PlanEntry) -> str:
    return entry.split or plan.split


def entry_spec(plan: SweepPlan, entry: PlanEntry, seed: int) -> dict:
    """What decides an (entry, seed)'s result; a stored result with another spec is stale."""
    spec = {key: value for key, value in to_dict(entry).items() if key not in PRESENTATION}
    spec.update(seed=seed, dataset=plan.dataset, split=split_of(plan, entry))
    if entry.kind == "train":
        spec["plan_overrides"] = list(plan.overrides)
    if entry.fd or entry.discrepancy:
        spec["fd_images"] = plan.fd_images
    if entry.discrepancy:
        spec["discrepancy_teacher"] = plan.discrepancy_teacher
    return spec


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
