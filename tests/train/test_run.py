"""The run folder: its lock, its metrics log after a crash, and the leftovers of killed writes."""

import fcntl
import json
import os
import tempfile
from pathlib import Path

import pytest

from squeeze_span.cli import main
from squeeze_span.config import TrainingConfig
from squeeze_span.train.run import RunFolder
from tests.conftest import tiny_run_overrides
from tests.train.test_trainer import CONFIG


@pytest.mark.parametrize(
    "logged, dropped",
    [
        ('{"step": 1}\n{"step": 2}\n{"step": 3, "lo', "its last line, which a crash cut short"),
        ('{"step": 1}\nnot json\n{"step": 2}\n[3]\n', "lines 2, 4, which are not records"),
        ('{"step": 1}\n{"step": 2}', None),  # cut just before its newline: kept, and the next line starts anew
    ],
    ids=["cut-short", "unreadable", "no-newline"],
)
def test_open_keeps_the_readable_metrics(tmp_path, capsys, logged, dropped):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(logged)
    run = RunFolder(tmp_path, TrainingConfig(), ["test"])
    run.open(step=2)
    run.log({"step": 3, "loss": 1.0})
    run.close()
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    assert capsys.readouterr().err == (f"{metrics}: dropped {dropped}\n" if dropped else "")


def killed_write(folder: Path, name: str) -> Path:
    """The temporary file that atomic_write(folder / name) leaves when its process is killed."""
    descriptor, path = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(descriptor)
    return Path(path)


def test_open_removes_what_killed_writes_left(tmp_path):
    checkpoints, snapshot = tmp_path / "checkpoints", tmp_path / "snapshots" / "network-snapshot-000001"
    checkpoints.mkdir()
    snapshot.mkdir(parents=True)
    stale = [killed_write(checkpoints, "last.pt"), killed_write(snapshot, "G.safetensors")]
    others = [checkpoints / "last.pt", checkpoints / "notes.tmp", checkpoints / ".last.pt.tmp", tmp_path / ".x.y.tmp"]
    for path in others:
        path.write_text("not ours")
    run = RunFolder(tmp_path, TrainingConfig(), ["test"])
    run.open(step=0)
    run.close()
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in others)


def test_a_second_run_in_a_busy_folder_is_refused(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    args = ["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)]
    with (run / ".lock").open("a+") as holder:  # as a running run holds it
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("4321\n")
        holder.flush()
        assert main(args) == 2
        assert capsys.readouterr().err == (
            f"ConfigError: output_dir {run} is in use by another run (process 4321); wait for it to finish, "
            "or choose another output_dir\n"
        )
        assert sorted(path.name for path in run.iterdir()) == [".lock"]
    assert main(args) == 0  # free once its holder is gone
    with (run / ".lock").open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and free again after the run
