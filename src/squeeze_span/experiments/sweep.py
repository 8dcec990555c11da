"""``squeeze-span sweep PLAN.yaml``: run a plan's entries in turn, one result file each.

A finished (entry, seed) leaves ``results_dir/NAME/seedS.json``, written atomically; a
sweep skips those and resumes an unfinished training run from its checkpoint
(``resume=auto``), so a sweep of many hours can be stopped at any point and continued in
a later session. With a time limit (a session's or a cluster job's), a sweep starts only the
runs it expects to finish within it, from the pace of the finished runs with the same settings,
and leaves the others for the next sweep. A result made under other settings than the plan's now (its ``spec``) is
stale: the sweep refuses to start until it is removed, rather than mix two settings in one
table. An entry that fails with a user error is reported in one line and the sweep goes on.
A finished result that lacks a measurement added to the sweep after it ran (the relative
discrepancy, a probe protocol) gets it from the run's kept backbone or its run folder, when either
is still there, and from a rebuilt model for the untrained kinds.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from squeeze_span.errors import ConfigError, UserError
from squeeze_span.experiments.plan import (
    PlanEntry,
    SweepPlan,
    draws_for,
    entry_spec,
    load_plan,
    seeds_of,
    spec_hash,
    split_of,
)
from squeeze_span.fileio import atomic_write
from squeeze_span.runtime import machine_description, resolve_device, slow_bf16


@dataclass
class Job:
    entry: PlanEntry
    seed: int
    result: Path
    spec: dict


@dataclass
class SweepOutcome:
    done: list[str] = field(default_factory=list)  # ran now
    skipped: list[str] = field(default_factory=list)  # found finished
    failed: list[str] = field(default_factory=list)  # 'name seed S: the error line'
    deferred: list[str] = field(default_factory=list)  # not started: expected to outlast the time limit


def jobs_of(plan: SweepPlan) -> list[Job]:
    """Every (entry, seed), in the order they run: by stage, then seed by seed, then as listed."""
    ordered = sorted(
        (
            (entry.stage, round_, index, entry, seed)
            for index, entry in enumerate(plan.entries)
            for round_, seed in enumerate(seeds_of(plan, entry))
        ),
        key=lambda item: item[:3],
    )
    return [
        Job(entry, seed, Path(plan.results_dir) / entry.name / f"seed{seed}.json", entry_spec(plan, entry, seed))
        for *_, entry, seed in ordered
    ]


@contextmanager
def claimed(plan: SweepPlan, job: Job) -> Iterator[bool]:
    """Hold the job for this process (True), or say that another sweep holds it (False).

    Two sweeps of one plan (one core each) then share its runs: each takes the next run that the
    other has not. The lock is the operating system's, so a killed sweep leaves nothing held.
    """
    path = Path(plan.runs_dir) / ".claims" / f"{job.entry.name}-seed{job.seed}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def stored_result(job: Job) -> dict | None:
    """The job's result if it is on disk and made under the same spec; None if absent; stale: ConfigError."""
    if not job.result.is_file():
        return None
    try:
        result = json.loads(job.result.read_text())
    except ValueError:
        raise ConfigError(f"{job.result} is not valid JSON; delete it to run that entry again") from None
    if result.get("spec_hash") != spec_hash(job.spec):
        raise ConfigError(
            f"{job.result} was made with other settings than the plan's {job.entry.name} (seed {job.seed}) has now; "
            "delete it to run the entry again, or restore the plan"
        )
    return result


def write_result(job: Job, result: dict) -> None:
    with atomic_write(job.result) as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")


def run_sweep(
    path: str | Path,
    *,
    device: str = "auto",
    progress: bool = True,
    only: list[str] | None = None,
    time_limit: float | None = None,
) -> SweepOutcome:
    """Run the plan at ``path`` (only the entries named in ``only``, when given); with ``time_limit``
    (seconds from now), start no run that is expected to end after it."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    plan = load_plan(path)
    jobs = every_job = jobs_of(plan)
    if only:
        unknown = sorted(set(only) - {job.entry.name for job in jobs})
        if unknown:
            raise ConfigError(f"--only {', '.join(unknown)}: not an entry of {path}")
        jobs = [job for job in jobs if job.entry.name in only]
    stored = {job.result: stored_result(job) for job in jobs}  # stale results stop the sweep here
    finished = [job for job in jobs if stored[job.result] is not None]
    todo = [job for job in jobs if job not in finished]
    outcome = SweepOutcome(skipped=[f"{job.entry.name} seed {job.seed}" for job in finished])
    print(f"sweep {path}: {len(jobs)} runs, {len(finished)} finished before, {len(todo)} to run", flush=True)
    runner = Runner(plan, resolve_device(device), progress, command=["squeeze-span", "sweep", str(path)])
    for job in finished:
        with claimed(plan, job) as mine:  # read again inside the claim: another sweep may have completed it
            completed = runner.complete(job, stored_result(job)) if mine else None
            if completed is not None:
                write_result(job, completed)
                print(f"{job.entry.name} seed {job.seed}: added the measurements it lacked", flush=True)
    spent: list[float] = []
    for index, job in enumerate(todo, 1):
        label = f"{job.entry.name} seed {job.seed}"
        left = runner.time_left(todo, every_job, spent)  # the runs deferred before this one are left too
        print(f"[{index}/{len(todo)}] {label} ({job.entry.kind}){left}", flush=True)
        started = time.perf_counter()
        with claimed(plan, job) as mine:
            if not mine or job.result.is_file():
                outcome.skipped.append(label)
                print(f"[{index}/{len(todo)}] {label}: taken by another sweep of this plan", flush=True)
                continue
            if deadline is not None:
                left, expected = deadline - time.perf_counter(), runner.expected_seconds(job, every_job)
                # no pace of this machine yet, but a run in emulated bf16 is sure to be several times too slow
                emulated = expected is None and runner.slow_bf16(job)
                if left <= 0 or emulated or (expected is not None and expected > left):
                    outcome.deferred.append(label)
                    if emulated:
                        why = "it trains in bf16, which this GPU emulates several times slower than fp32; run it "
                        why += "where bf16 is in hardware (Ampere or newer, or a CPU), or here without --time-limit"
                    else:
                        needs = "" if expected is None else f"it needs about {expected / 60:.0f} min, "
                        why = f"{needs}{max(left, 0) / 60:.0f} min of the time limit left"
                    print(f"[{index}/{len(todo)}] {label}: left for a later sweep ({why})", flush=True)
                    continue
            try:
                result = runner.run(job)
            except UserError as error:
                outcome.failed.append(f"{label}: {type(error).__name__}: {error}")
                print(f"[{index}/{len(todo)}] {label} failed: {type(error).__name__}: {error}", flush=True)
                continue
            spent.append(time.perf_counter() - started)
            result.update(
                name=job.entry.name,
                kind=job.entry.kind,
                seed=job.seed,
                tables=dict(job.entry.tables),
                spec=job.spec,
                spec_hash=spec_hash(job.spec),
                wall_seconds=round(spent[-1], 1),
                machine=machine_description(runner.device),
                date=time.strftime("%Y-%m-%d"),
            )
            write_result(job, result)
        outcome.done.append(label)
        top1 = f"top-1 {result['top1']:.2f}" if "top1" in result else "done"
        print(f"[{index}/{len(todo)}] {label}: {top1} in {spent[-1] / 60:.1f} min", flush=True)
    return outcome


class Runner:
    """Runs one job of each kind; holds what a sweep computes once (the real images' FD statistics)."""

    def __init__(self, plan: SweepPlan, device: torch.device, progress: bool, command: list[str]) -> None:
        self.plan, self.device, self.progress, self.command = plan, device, progress, command
        self._fd: Any = None  # the GeneratorFD job, made on first use

    def run(self, job: Job) -> dict[str, Any]:
        return getattr(self, f"_{job.entry.kind}")(job)

    def complete(self, job: Job, result: dict[str, Any]) -> dict[str, Any] | None:
        """``result`` with what the sweep measures now and it lacks (the relative discrepancy, a probe
        protocol), measured on its model; None when nothing is missing or its model is gone."""
        missing_discrepancy = job.entry.discrepancy and "relative" not in result.get("discrepancy", {})
        missing = self._missing_protocols(result)
        if not (missing_discrepancy or any(missing.values())):
            return None
        found = self._model_of(job)
        if found is None:
            return None
        model, view, precision = found
        completed = dict(result)
        if missing_discrepancy:
            completed["discrepancy"] = self._discrepancy(model, self._training_config(job))
        if any(missing.values()):
            probe = self._probe(job, model, precision=precision, view=view, linear=False, **missing)
            for key in ("knn", "few_labels"):
                completed[key] = {**result.get(key, {}), **probe.get(key, {})}
        return completed

    def time_left(self, todo: Sequence[Job], jobs: Sequence[Job], spent: Sequence[float]) -> str:
        """'; about N min of runs left in the plan': the runs of ``todo`` with no result yet, each at its
        expected time, or at this sweep's mean time a run where it has none; one core's time, which
        sweeps sharing the plan divide between them. Empty while some run has neither."""
        expected = [self.expected_seconds(job, jobs) for job in todo if not job.result.is_file()]
        mean = sum(spent) / len(spent) if spent else None
        if mean is None and None in expected:
            return ""
        seconds = sum(mean if each is None else each for each in expected)
        return f"; about {seconds / 60:.0f} min of runs left in the plan"

    def slow_bf16(self, job: Job) -> bool:
        """Whether ``job`` trains in bf16 where that runs several times slower than fp32 (:func:`slow_bf16`)."""
        return job.entry.kind == "train" and (
            self._training_config(job).train.precision == "bf16" and slow_bf16(self.device)
        )

    def expected_seconds(self, job: Job, jobs: Sequence[Job]) -> float | None:
        """About how long ``job`` takes from where its run folder stands: the training pace per step of the
        finished runs with its settings (any seed, any length) on this kind of machine, times the steps it has
        left, plus their mean probe time. The pace is their seconds over their steps, all together, so each run
        weighs by its steps: a short run's start-up, or its slow hour on a busy machine, does not count as much
        as a long run's thousands of steps. None for a kind that does not train, or before any run of its
        settings has finished here."""
        if job.entry.kind != "train":
            return None
        key, machine = pace_key(job.spec), machine_description(self.device)
        finished = []
        for other in jobs:
            try:  # read as the sweep reads results: a stale or unreadable one sets no pace
                result = stored_result(other) if pace_key(other.spec) == key else None
            except ConfigError:
                result = None
            if result and result.get("steps") and result.get("machine") == machine:
                finished.append(result)
        if not finished:
            return None
        config = self._training_config(job)
        run_dir = Path(config.output_dir)
        done = logged_step(run_dir)
        steps = config.train.max_steps or finished[0]["steps"]  # the same settings train as many steps
        pace = sum(result["seconds"] for result in finished) / sum(result["steps"] for result in finished)
        probe = sum(result.get("probe", {}).get("seconds", 0.0) for result in finished) / len(finished)
        return pace * max(steps - done, 0) + probe

    def _missing_protocols(self, result: dict[str, Any]) -> dict[str, list[int]]:
        """The plan's protocols that ``result`` lacks; a few-label probe over fewer draws than the plan's
        is measured again (the draws are fixed by their number, so the first ones come out the same)."""
        knn, few = result.get("knn", {}), result.get("few_labels", {})
        return {
            "knn_ks": [k for k in self.plan.knn_ks if str(k) not in knn],
            "labels_per_class": [
                n
                for n in self.plan.labels_per_class
                if len(few.get(str(n), {}).get("draws", ())) < draws_for(self.plan, n)
            ],
        }

    def _model_of(self, job: Job) -> tuple[torch.nn.Module, str, str] | None:
        """A finished job's model, how it sees images, and its precision; None when it is not kept."""
        from squeeze_span.eval.probe import RawPixels
        from squeeze_span.models import load_backbone
        from squeeze_span.models.io import RUN_CHECKPOINT

        kind = job.entry.kind
        if kind == "pixels":
            return RawPixels(), "backbone", "auto"
        if kind == "random_init":
            return self._untrained(job), "backbone", "auto"
        if kind == "discriminator":
            return self._discriminator_features(job), "gan", "auto"
        config = self._training_config(job)
        # The run's own weights first: the kept file is rounded to bf16, which moves a few-label probe's
        # cross-validated decay often enough to shift a 5-draw mean by half a point.
        for source in (Path(config.output_dir) / RUN_CHECKPOINT, job.result.with_suffix(".safetensors")):
            if source.is_file():
                return load_backbone(source), "backbone", config.train.precision
        return None

    # -- the kinds -------------------------------------------------------------------------------------------

    def _train(self, job: Job) -> dict[str, Any]:
        from squeeze_span.methods import METHODS
        from squeeze_span.models import load_backbone, save_backbone
        from squeeze_span.train import Trainer

        config = self._training_config(job)
        Trainer(config, METHODS[config.method.name], command=self.command).fit()
        final = last_metrics(Path(config.output_dir))
        backbone = load_backbone(config.output_dir)
        result = {
            "method": config.method.name,
            "data": data_of(config.method),
            "config": job.entry.config,
            "overrides": list(job.entry.overrides),
            "steps": final["step"],
            "seconds": round(final["seconds"], 1),
            "final_metrics": {key: value for key, value in final.items() if key.startswith(("loss", "std"))},
            **self._probe(job, backbone, precision=config.train.precision),
        }
        if job.entry.fd:
            result["fd"] = self._generator_fd(config.teacher.path)
        if job.entry.discrepancy:
            result["discrepancy"] = self._discrepancy(backbone, config)
        if job.entry.keep_backbone:
            kept = save_backbone(backbone, job.result.with_suffix(".safetensors"), dtype=torch.bfloat16)
            result["backbone"] = kept.name
        return result

    def _random_init(self, job: Job) -> dict[str, Any]:
        probe = self._probe(job, self._untrained(job))
        return {"method": "random_init", "data": None, "steps": 0, "seconds": 0.0, **probe}

    def _pixels(self, job: Job) -> dict[str, Any]:
        from squeeze_span.eval.probe import RawPixels

        return {"method": "pixels", "data": None, "steps": 0, "seconds": 0.0, **self._probe(job, RawPixels())}

    def _discriminator(self, job: Job) -> dict[str, Any]:
        probe = self._probe(job, self._discriminator_features(job), view="gan")
        return {"method": f"discriminator_{job.entry.features}", "data": None, "steps": 0, "seconds": 0.0, **probe}

    # -- shared parts ----------------------------------------------------------------------------------------

    def _untrained(self, job: Job) -> torch.nn.Module:
        from squeeze_span.eval.jobs import untrained_backbone

        model = self._training_config(job).model
        return untrained_backbone(
            model.backbone, self.plan.dataset, self.plan.data_root, width=model.width, seed=job.seed
        )

    def _discriminator_features(self, job: Job) -> torch.nn.Module:
        from squeeze_span.eval.jobs import discriminator_features

        return discriminator_features(job.entry.model, job.entry.features)

    def _training_config(self, job: Job):
        from squeeze_span.methods import load_training_config

        run_dir = Path(self.plan.runs_dir) / job.entry.name / f"seed{job.seed}"
        overrides = [
            *self.plan.overrides,
            *job.entry.overrides,
            f"train.seed={job.seed}",
            f"output_dir={run_dir}",
            "resume=auto",
            f"train.progress={self.progress}",
        ]
        if self.plan.data_root is not None:
            overrides.append(f"data.root={self.plan.data_root}")
        return load_training_config(job.entry.config, overrides)

    def _probe(
        self,
        job: Job,
        backbone: torch.nn.Module,
        *,
        precision: str = "auto",
        view: str = "backbone",
        linear: bool = True,
        knn_ks: Sequence[int] | None = None,
        labels_per_class: Sequence[int] | None = None,
    ) -> dict:
        """The plan's probe protocols (or those named) on ``backbone``: top1/top5 of the linear probe on
        every label, ``knn`` by k and ``few_labels`` by labels per class."""
        from squeeze_span.eval.probe import probe_backbone

        few_labels = self.plan.labels_per_class if labels_per_class is None else labels_per_class
        probe = probe_backbone(
            backbone,
            self.plan.dataset,
            self.plan.data_root,
            split=split_of(self.plan, job.entry),
            view=view,
            device=self.device,
            precision=precision,
            progress=self.progress,
            linear=linear,
            knn_ks=self.plan.knn_ks if knn_ks is None else knn_ks,
            labels_per_class=few_labels,
            draws={n: draws_for(self.plan, n) for n in few_labels},
        )
        result = {key: probe[key] for key in ("knn", "few_labels") if key in probe}
        if linear:
            result.update(top1=probe["linear"]["top1"], top5=probe["linear"]["top5"])
            result["probe"] = {key: probe[key] for key in ("split", "protocol", "image_size", "seconds")}
        return result

    def _generator_fd(self, teacher: str | None) -> dict[str, Any]:
        from squeeze_span.eval.jobs import GeneratorFD

        if teacher is None:
            raise ConfigError("fd: true needs a run with a teacher (teacher.path)")
        if self._fd is None:  # one per sweep: the real images' statistics are computed once
            settings = dict(count=self.plan.fd_images, device=self.device, progress=self.progress)
            self._fd = GeneratorFD(self.plan.dataset, self.plan.data_root, **settings)
        value, metric = self._fd(teacher)
        return {"metric": metric, "value": round(value, 4), "teacher": teacher, "images": self.plan.fd_images}

    def _discrepancy(self, backbone: torch.nn.Module, config: Any) -> dict[str, Any]:
        """FD between the student's pooled features of generated and of real train images."""
        from squeeze_span.data import load_dataset, normalization_stats
        from squeeze_span.eval.features import view_size
        from squeeze_span.eval.frechet import BackboneFeatures, frechet_distance, generated_statistics, real_statistics
        from squeeze_span.generators import load_generator

        teacher = config.teacher.path or self.plan.discrepancy_teacher
        if teacher is None:
            raise ConfigError("discrepancy: true on a run without a teacher needs the plan's discrepancy_teacher")
        real = load_dataset(self.plan.dataset, self.plan.data_root, "train")
        size, _ = view_size(backbone, self.plan.dataset, real.image_size[0])
        mean, std = normalization_stats(self.plan.dataset, real.num_channels)
        extractor = BackboneFeatures(backbone.to(self.device), size, mean, std, config.train.precision)
        count = self.plan.fd_images
        settings = dict(count=count, progress=self.progress)
        real_side = real_statistics(real, extractor, **settings)
        generated = generated_statistics(load_generator(teacher), extractor, device=self.device, **settings)
        value = frechet_distance(real_side, generated)
        # FD carries the square of the features' scale, which differs between methods; divided by the
        # real features' total variance it compares runs whose features are scaled differently.
        spread = float(real_side.covariance.trace())
        return {
            "measure": "FD in the student's pooled features",
            "value": round(value, 4),
            "relative": round(value / spread, 5),
            "relative_measure": "FD / trace of the real features' covariance",
            "teacher": teacher,
            "images": count,
        }


PACE_FREE_OVERRIDES = ("train.max_steps=", "train.checkpoint_every=")


def pace_key(spec: dict) -> str:
    """What sets a training run's pace per step: its spec without its name, seed, number of steps and
    checkpoint cadence (a checkpoint costs about a second, against minutes between them)."""
    same = {key: value for key, value in spec.items() if key not in ("name", "seed")}
    for key in ("overrides", "plan_overrides"):
        same[key] = [item for item in spec.get(key, ()) if not item.startswith(PACE_FREE_OVERRIDES)]
    return json.dumps(same, sort_keys=True)


def logged_step(run_dir: Path) -> int:
    """The last step a run folder logged; 0 for none yet (a run stopped before its first log resumes from 0)."""
    try:
        return int(last_metrics(run_dir)["step"])
    except (OSError, ConfigError):
        return 0


def last_metrics(run_dir: Path) -> dict[str, Any]:
    """The last complete line of a run's metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            return record
    raise ConfigError(f"{run_dir}/metrics.jsonl holds no step; delete the run folder to train it again")


def data_of(method: Any) -> str:
    """'real', 'syn' or 'mix': the images a method trained on."""
    data = getattr(method, "data", None)
    if data is not None:
        return data
    ratio = getattr(method, "syn_ratio", 0.0)
    return "syn" if ratio == 1 else "real" if ratio == 0 else "mix"
