"""A run's folder and its logs, shared by every trainer (methods, GANs).

output_dir/
  config.yaml        the resolved config: the run can be repeated from it
  command.txt        every command line that ran in this folder, one a line
  changes.txt        each resume that changed settings: its step and every key's old -> new value
  metrics.jsonl      one JSON object per logged step
  events.out.tfevents.*   the same scalars for TensorBoard
  checkpoints/       last.pt (and kept snapshots)
  .lock              locked (flock) by the process that runs here, so that a second run is refused;
                     the system releases it when that process ends, however it ends
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from squeeze_span.config import to_dict, to_yaml
from squeeze_span.errors import ConfigError, UserError
from squeeze_span.fileio import append_line, atomic_write, remove_stale_temporaries
from squeeze_span.train.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_optimizer_state,
    restore_rng,
    save_checkpoint,
)
from squeeze_span.train.distributed import all_gather_objects, barrier, rank
from squeeze_span.train.events import EventWriter

# What every trainer may change on resume without making the run another one: the optimizer's
# hyperparameters, where and in which precision it computes, its time budget, how often it logs and saves.
CHANGEABLE_ON_RESUME = (
    "optimizer",
    "data.on_device",
    "train.max_seconds",
    "train.precision",
    "train.device",
    "train.log_every",
    "train.checkpoint_every",
    "train.progress",
)
# Where the run is written and whether it resumes or starts over are not settings of the run.
_NOT_COMPARED = ("output_dir", "resume", "overwrite")
# What a run leaves in its folder besides config.yaml and command.txt: what starting over deletes.
RUN_RECORDS = ("checkpoints/*.pt", "metrics.jsonl", "events.out.tfevents.*", "changes.txt", "snapshots/*")


class TrainingDiverged(UserError):
    """A loss or a weight became NaN or infinite; the last healthy checkpoint is kept."""


# A blow-up can begin before the first NaN: weights still finite but far from where they were. A
# checkpoint whose weights' norm (or logged loss) grew this many times over the one before it is
# taken to carry the blow-up; healthy training changes either by a few percent between checkpoints.
BLOWUP_GROWTH = 4.0
# Against the run's initial weights, with more room: a healthy run's weights drift further over a run
# than between two checkpoints (here a norm of 32 stays near 30; a blow-up takes it to thousands).
ORIGIN_GROWTH = 10.0


def advice_after_divergence(run: RunFolder, resume: Callable[[], str], restart: Callable[[], str]) -> str:
    """The sentence after "the run stopped": what is kept, and the command that goes on from it."""
    kept, healthy = run.keep_healthy()
    if kept is None:
        return f"no checkpoint was written: start again with a lower rate: {restart()}"
    if not healthy:
        return f"{kept}: the run must start again, with a lower rate: {restart()}"
    return f"{kept}. Resume it with a lower rate: {resume()}"


def check_finite(logs: dict[str, torch.Tensor], step: int, advice: Callable[[], str]) -> None:
    """Stop on a NaN or infinite ``loss``, naming the most specific term that went bad."""
    if torch.isfinite(logs["loss"]):
        return
    terms = sorted((name for name in logs if name.startswith("loss/")), key=len, reverse=True)
    bad = next((name for name in terms if not torch.isfinite(logs[name]).all()), "loss")
    raise TrainingDiverged(f"{bad} became {logs[bad].item()} at step {step}; the run stopped and {advice()}")


def check_finite_weights(modules: Mapping[str, nn.Module], step: int, advice: Callable[[], str]) -> None:
    """Stop on a NaN or infinite weight, before it is checkpointed over the last finite state.

    A step whose loss was finite can still leave non-finite weights; the loss check sees
    them only in the next step.
    """
    for prefix, module in modules.items():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise TrainingDiverged(
                    f"{prefix}.{name} became non-finite at step {step}; the run stopped and {advice()}"
                )


def weight_norm(modules: Mapping[str, nn.Module]) -> float:
    squares = sum(
        float(tensor.detach().float().square().sum())
        for module in modules.values()
        for tensor in module.state_dict().values()
        if tensor.is_floating_point()
    )
    return math.sqrt(squares)


def health(modules: Mapping[str, nn.Module], line: dict[str, Any] | None, origin: float | None) -> dict[str, Any]:
    """What a checkpoint records to tell, later, whether it had begun to blow up: its weights' norm, its
    loss, and the norm of the run's initial weights."""
    loss = line.get("loss") if line else None
    return {
        "weight_norm": weight_norm(modules),
        "loss": float(loss) if isinstance(loss, (int, float)) else None,
        "origin_weight_norm": origin,
    }


def blown_up(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    """Whether ``after`` (a checkpoint's health) grew BLOWUP_GROWTH times over ``before`` in norm or loss."""
    if not before or not after:
        return False  # a checkpoint written before squeeze-span recorded its health: nothing to compare
    for key in ("weight_norm", "loss"):
        old, new = before.get(key), after.get(key)
        if old is not None and new is not None and abs(new) > BLOWUP_GROWTH * max(abs(old), 1e-12):
            return True
    return False


def resume_path(resume: str | None, checkpoints: Path, overwrite: bool = False) -> Path | None:
    """The checkpoint to resume from: ``resume=auto`` takes checkpoints/last.pt when there is one
    (a fresh run otherwise), a path takes that file; None starts afresh.

    Starting afresh in a folder that already holds a run's checkpoints or metrics would replace
    that run: it is refused, unless ``overwrite`` asks for it.
    """
    if resume is not None and overwrite:
        raise ConfigError(f"resume={resume} continues a run and overwrite=true starts it over; give one of them")
    if resume is None:
        folder = checkpoints.parent
        held = [*folder.glob("checkpoints/*.pt"), *[m for m in folder.glob("metrics.jsonl") if m.stat().st_size]]
        if held and not overwrite:
            if is_locked(folder):  # a run still going there: say that first
                raise in_use(folder)
            raise ConfigError(
                f"output_dir {folder} already holds a run ({held[0].relative_to(folder)}); continue it with "
                "resume=auto, train into a new output_dir, or start over with overwrite=true (deletes that run)"
            )
        return None
    if resume == "auto":
        last = checkpoints / "last.pt"
        return last if last.exists() else None
    return Path(resume)


def resume_changes(saved: Mapping[str, Any], config: Any, changeable: Sequence[str], source: Path) -> list[str]:
    """The settings ``config`` changes against ``saved``, the config in the checkpoint ``source``: 'key old -> new'.

    A changed key outside ``changeable`` (full keys, or sections such as 'optimizer') would
    make the run another one (its model, method, data, teacher, batch or seed) and is refused.
    A key that the checkpoint lacks (written before squeeze-span had it) is not compared.
    """
    missing = object()
    changed = []
    for key, new in _settings(config).items():
        old = _lookup(saved, key, missing)
        if key not in _NOT_COMPARED and old is not missing and old != new:
            changed.append((key, old, new))
    refused = [(key, old, new) for key, old, new in changed if not _matches(key, changeable)]
    if refused:
        trained = ", ".join(f"{key}={_text(old)}" for key, old, _ in refused)
        given = ", ".join(f"{key}={_text(new)}" for key, _, new in refused)
        raise ConfigError(
            f"{source} was trained with {trained}, which cannot change on resume (this config has {given}); "
            f"resume with {trained}, or start a new run in another output_dir"
        )
    return [f"{key} {_text(old)} -> {_text(new)}" for key, old, new in changed]


def _settings(config: Any, prefix: str = "") -> dict[str, Any]:
    """A config dataclass as {dotted key: value}; a dict-typed field (a network's kwargs) is one value."""
    settings = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            settings.update(_settings(value, f"{prefix}{field.name}."))
        else:
            settings[f"{prefix}{field.name}"] = value
    return settings


def _lookup(tree: Mapping[str, Any], key: str, default: Any) -> Any:
    for part in key.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return default
        tree = tree[part]
    return tree


def _matches(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def _text(value: Any) -> str:
    return "null" if value is None else str(value)


def _logged_step(line: str) -> int | None:
    """The step of one metrics.jsonl line; None for a line that is not a record with a step."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


def is_locked(folder: Path) -> bool:
    """Whether another process holds ``folder``'s lock (runs there now)."""
    if not (folder / ".lock").exists():
        return False
    with (folder / ".lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def in_use(folder: Path) -> ConfigError:
    holder = (folder / ".lock").read_text().strip() if (folder / ".lock").exists() else ""
    by = f" (process {holder})" if holder else ""
    return ConfigError(
        f"output_dir {folder} is in use by another run{by}; wait for it to finish, or choose another output_dir"
    )


class RunFolder:
    """Writes a run's files on the main process; every method is a no-op elsewhere."""

    def __init__(self, output_dir: str | Path, config: Any, command: list[str], is_main: bool = True) -> None:
        self.path = Path(output_dir)
        self.checkpoints = self.path / "checkpoints"
        self.config = config
        self.command = command
        self.is_main = is_main
        self._lock = None
        self._metrics = None
        self._events: EventWriter | None = None

    def open(
        self, step: int, changes: Sequence[str] = (), line: dict[str, Any] | None = None, *, start_over: bool = False
    ) -> None:
        """Lock the folder for this run; record the config, the command and the settings that resuming at
        ``step`` changed; drop what a killed run left past ``step`` (logged steps, about to run again) and
        its half-written files; log ``line``, the checkpoint's own log line, if a kill came before it.
        ``start_over`` first deletes the records of the run that was there (``overwrite=true``)."""
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            if start_over:
                for record in [path for pattern in RUN_RECORDS for path in self.path.glob(pattern)]:
                    shutil.rmtree(record) if record.is_dir() else record.unlink()
            remove_stale_temporaries(self.path)
            with atomic_write(self.path / "config.yaml") as temp:
                temp.write_text(to_yaml(self.config))
            with (self.path / "command.txt").open("a") as file:
                append_line(file, self.path / "command.txt", shlex.join(self.command) + "\n")
            if changes:
                print(f"resuming at step {step} with changed settings: {', '.join(changes)}")
                with (self.path / "changes.txt").open("a") as file:
                    append_line(file, self.path / "changes.txt", f"step {step}: {', '.join(changes)}\n")
            logged = self._trim_metrics(step)
            self._metrics = (self.path / "metrics.jsonl").open("a")
            self._events = EventWriter(self.path)
            if line is not None and logged < step:
                self.log(line)
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
        lock = (self.path / ".lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise in_use(self.path) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _trim_metrics(self, step: int) -> int:
        """Keep the readable lines up to ``step``; return the last step they log (0 for none)."""
        metrics = self.path / "metrics.jsonl"
        if not metrics.exists():
            return 0
        text = metrics.read_text(errors="replace")
        lines = text.splitlines()
        steps = [_logged_step(line) for line in lines]
        unreadable = [number for number, logged in enumerate(steps, 1) if logged is None]
        if unreadable == [len(lines)]:
            print(f"{metrics}: dropped its last line, which a crash cut short", file=sys.stderr)
        elif unreadable:
            print(f"{metrics}: dropped lines {', '.join(map(str, unreadable))}, which are not records", file=sys.stderr)
        kept = [(line, logged) for line, logged in zip(lines, steps) if logged is not None and logged <= step]
        kept_text = "".join(line + "\n" for line, _ in kept)
        if kept_text != text:
            with atomic_write(metrics) as temp:
                temp.write_text(kept_text)
        return max((logged for _, logged in kept), default=0)

    def keep_healthy(self) -> tuple[str | None, bool]:
        """After a divergence: make last.pt the last healthy checkpoint; say which step it holds (None:
        there is none), and whether it is healthy.

        A last.pt that had already begun to blow up (:func:`blown_up` against previous.pt) is set aside
        as diverged.pt, and previous.pt becomes last.pt. One whose weights grew ORIGIN_GROWTH times over
        the run's initial ones carries the blow-up with no healthy checkpoint before it: not healthy.
        """
        last, previous = self.checkpoints / "last.pt", self.checkpoints / "previous.pt"
        if not last.exists():
            return None, False
        state = load_checkpoint(last)
        said = f"{last} holds step {state['step']}"
        if previous.exists():
            earlier = load_checkpoint(previous)
            if blown_up(earlier.get("health"), state.get("health")):
                os.replace(last, self.checkpoints / "diverged.pt")
                os.replace(previous, last)
                said = (
                    f"{last} holds step {earlier['step']} (step {state['step']} had already begun to blow up: "
                    "set aside as diverged.pt)"
                )
                state = earlier
        kept = state.get("health") or {}
        origin, norm = kept.get("origin_weight_norm"), kept.get("weight_norm")
        if origin and norm and norm > ORIGIN_GROWTH * origin:
            return f"{said}, but its weights have blown up already (norm {norm:.3g}, {origin:.3g} at the start)", False
        return said, True

    def keep_previous(self) -> None:
        """Before last.pt is replaced: keep it as previous.pt (a hard link: no copy, no extra space until
        last.pt is rewritten), so that a divergence found later can fall back one checkpoint."""
        last, previous = self.checkpoints / "last.pt", self.checkpoints / "previous.pt"
        if not last.exists():
            return
        link = previous.with_suffix(".link.tmp")
        link.unlink(missing_ok=True)
        try:
            os.link(last, link)
            os.replace(link, previous)
        except OSError:  # a file system without hard links: the run goes on with last.pt alone
            link.unlink(missing_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        if self._metrics is None:
            return
        append_line(self._metrics, self.path / "metrics.jsonl", json.dumps(record) + "\n")
        self._events.add_scalars(
            {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}, record["step"]
        )

    def progress(self, total: float, initial: float, desc: str, enabled: bool, unit: str = "step") -> tqdm:
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            dynamic_ncols=True,
            disable=not (self.is_main and enabled),
        )

    def close(self) -> None:
        """Close the logs and release the folder's lock."""
        # Every line was flushed as it was written; a line whose write failed (a full disk) was reported
        # then, and closing must not raise over that report while trying to write it again.
        if self._metrics is not None:
            with contextlib.suppress(OSError):
                self._metrics.close()
            self._metrics = None
        if self._events is not None:
            with contextlib.suppress(OSError):
                self._events.close()
            self._events = None
        if self._lock is not None:
            self._lock.close()  # closing the file releases its lock
            self._lock = None


class ResumableRun:
    """What every trainer shares about its run: the folder, the atomic checkpoint with every RNG
    state, exact resume, and the stop on a non-finite weight.

    A subclass sets ``config`` (with ``resume``, ``overwrite`` and ``output_dir``), ``run`` (its
    :class:`RunFolder`), ``device``, ``step``, ``stream`` (its real-data stream) and ``changeable``
    (the keys a resume may change), and says what its checkpoint holds: ``networks()`` and
    ``optimizers()`` by their keys in the checkpoint, ``random_generators()``, and
    ``extra_state()`` / ``load_extra_state()`` for the rest. ``lower_rates()`` names the overrides
    that lower its learning rates, for the advice a divergence gives.
    """

    config: Any
    run: RunFolder
    device: torch.device
    step: int
    stream: Any
    changeable: Sequence[str] = CHANGEABLE_ON_RESUME
    origin_weight_norm: float | None = None  # of the run's initial weights, for telling a blow-up

    def networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def random_generators(self) -> dict[str, torch.Generator]:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        return {}

    command_name: str = "train"

    def lower_rates(self) -> list[str]:
        """key=value overrides that lower the run's learning rates tenfold (a divergence rarely yields to less)."""
        raise NotImplementedError

    def advice(self) -> str:
        """After a divergence: what is kept, and the command that follows the advice (a lower rate)."""
        command = f"squeeze-span {self.command_name} {Path(self.config.output_dir) / 'config.yaml'}"
        rates = " ".join(self.lower_rates())
        return advice_after_divergence(
            self.run,
            resume=lambda: f"`{command} resume=auto {rates}` (or try train.precision=fp32)",
            restart=lambda: f"`{command} overwrite=true {rates}` (or try train.precision=fp32)",
        )

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` saved; ``state`` may predate a key (an older checkpoint)."""

    def check_resumable(self, state: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint this run cannot continue (beyond a changed config); nothing by default."""

    @property
    def checkpoint_dir(self) -> Path:
        return self.run.checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": to_dict(self.config),
            **{key: network.state_dict() for key, network in self.networks().items()},
            **{key: optimizer.state_dict() for key, optimizer in self.optimizers().items()},
            "stream": self.stream.state_dict(),
            "rng": all_gather_objects(capture_rng(self.random_generators())),  # every rank's, for its resume
            **self.extra_state(),
        }

    def save(self, line: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Checkpoint this step (checkpoints/last.pt, atomically; the one before stays as previous.pt)
        with its log line (None if it logs none), which a resume writes if a kill came between the two;
        return the state on the main process. A non-finite weight stops the run before it can replace
        the last finite checkpoint."""
        check_finite_weights(self.networks(), self.step, self.advice)
        state = {**self.state_dict(), "log": line, "health": health(self.networks(), line, self.origin_weight_norm)}
        if self.run.is_main:
            self.run.keep_previous()
            save_checkpoint(state, self.checkpoint_dir / "last.pt")
        barrier()
        return state if self.run.is_main else None

    def resume(self) -> tuple[list[str], dict[str, Any] | None]:
        """Continue from the checkpoint ``resume`` names, if any; return the settings this config changes
        and the checkpoint's log line."""
        path = resume_path(self.config.resume, self.checkpoint_dir, self.config.overwrite)
        if path is None:
            self.origin_weight_norm = weight_norm(self.networks())
            return [], None
        state = load_checkpoint(path, map_location=self.device)
        self.origin_weight_norm = (state.get("health") or {}).get("origin_weight_norm")
        self.check_resumable(state, path)
        changes = resume_changes(state["config"], self.config, self.changeable, path)
        try:
            for key, network in self.networks().items():
                network.load_state_dict(state[key])
        except (KeyError, RuntimeError) as error:
            raise ConfigError(
                f"{path} does not fit this config's networks ({str(error).splitlines()[0]}); "
                f"resume with the config in {path.parent.parent / 'config.yaml'}"
            ) from None
        for key, optimizer in self.optimizers().items():
            load_optimizer_state(optimizer, state[key])
        self.stream.load_state_dict(state["stream"])
        restore_rng(state["rng"][rank()], self.random_generators())
        self.step = int(state["step"])
        self.load_extra_state(state)
        return changes, state.get("log")
