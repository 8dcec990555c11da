"""A run's folder and its logs, shared by every trainer (methods, GANs).

output_dir/
  config.yaml        the resolved config: the run can be repeated from it
  command.txt        every command line that ran in this folder, one a line
  metrics.jsonl      one JSON object per logged step
  events.out.tfevents.*   the same scalars for TensorBoard
  checkpoints/       last.pt (and kept snapshots)
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from squeeze_span.config import to_yaml
from squeeze_span.errors import UserError
from squeeze_span.train.events import EventWriter


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def check_finite(logs: dict[str, torch.Tensor], step: int, checkpoint: Path, fix: str) -> None:
    """Stop on a NaN or infinite ``loss``, naming the most specific term that went bad."""
    if torch.isfinite(logs["loss"]):
        return
    terms = sorted((name for name in logs if name.startswith("loss/")), key=len, reverse=True)
    bad = next((name for name in terms if not torch.isfinite(logs[name]).all()), "loss")
    raise TrainingDiverged(
        f"{bad} became {logs[bad].item()} at step {step}; the run stopped and {checkpoint} keeps the last good "
        f"state. {fix}"
    )


def resume_path(resume: str | None, checkpoints: Path) -> Path | None:
    """The checkpoint to resume from: ``resume=auto`` takes checkpoints/last.pt when there is one
    (a fresh run otherwise), a path takes that file; None starts afresh."""
    if resume is None:
        return None
    if resume == "auto":
        last = checkpoints / "last.pt"
        return last if last.exists() else None
    return Path(resume)


class RunFolder:
    """Writes a run's files on the main process; every method is a no-op elsewhere."""

    def __init__(self, output_dir: str | Path, config: Any, command: list[str], is_main: bool = True) -> None:
        self.path = Path(output_dir)
        self.checkpoints = self.path / "checkpoints"
        self.config = config
        self.command = command
        self.is_main = is_main
        self._metrics = None
        self._events: EventWriter | None = None

    def open(self, step: int) -> None:
        """Record the config and command; drop logged steps past ``step`` (a killed run's, about to run again)."""
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(to_yaml(self.config))
        with (self.path / "command.txt").open("a") as file:
            file.write(shlex.join(self.command) + "\n")
        metrics = self.path / "metrics.jsonl"
        if metrics.exists():
            kept = [line for line in metrics.read_text().splitlines(keepends=True) if json.loads(line)["step"] <= step]
            metrics.write_text("".join(kept))
        self._metrics = metrics.open("a")
        self._events = EventWriter(self.path)

    def log(self, record: dict[str, Any]) -> None:
        if self._metrics is None:
            return
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
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
        if self._metrics is not None:
            self._metrics.close()
            self._events.close()
            self._metrics = self._events = None
