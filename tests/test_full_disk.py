"""A full disk at every write: one line that names the file and the space it needs, nothing already
written lost, no temporary file left behind. On a real (small tmpfs) disk, not a mocked one."""

import json
import subprocess
from pathlib import Path

import pytest

from squeeze_span.cli import main
from squeeze_span.train.checkpoint import load_checkpoint
from tests.conftest import tiny_run_overrides

CONFIG = "configs/fashion_mnist/squeeze_span.yaml"


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a chosen size, mounted under tmp_path; ``resize(kib)`` grows it (as freeing space would)."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def resize(kib: int, *, first: bool = False) -> Path:
        options = f"size={kib}k" if first else f"remount,size={kib}k"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); these checks need root")
        return mount

    yield resize
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # lazily: a failed test may hold a file


def temporaries(folder: Path) -> list[Path]:
    return list(folder.rglob(".*.tmp"))


def one_line(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    return error


def test_the_first_checkpoint_on_a_full_disk_is_one_line(learnable_fashion_mnist, tiny_teacher, small_disk, capsys):
    run = small_disk(40, first=True) / "run"  # room for the config and the logs (4 KiB pages), not a checkpoint
    args = ["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)]
    assert main(args) == 2
    error = one_line(capsys)
    assert error.startswith(f"OSError: {run / 'checkpoints' / 'last.pt'}: No space left on device (it needs more than")
    assert "written before the disk filled;" in error and "free); free space on that disk" in error
    assert (run / "config.yaml").is_file() and not temporaries(run)


def test_a_later_checkpoint_on_a_full_disk_keeps_the_last_one_and_resumes(
    learnable_fashion_mnist, tiny_teacher, small_disk, capsys
):
    disk = small_disk(4096, first=True)
    run = disk / "run"
    args = ["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)]
    assert main([*args, "train.max_steps=2"]) == 0
    size = (run / "checkpoints" / "last.pt").stat().st_size
    used = sum(path.stat().st_size for path in disk.rglob("*") if path.is_file())
    small_disk((used + size // 2) // 1024 + 8)  # the next checkpoint fits only half
    assert main([*args, "resume=auto"]) == 2
    assert f"{run / 'checkpoints' / 'last.pt'}: No space left on device" in one_line(capsys)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2 and not temporaries(run)
    small_disk(4096)  # space freed: the run goes on from the kept checkpoint
    assert main([*args, "resume=auto"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4


def test_export_to_a_full_disk_is_one_line_and_leaves_nothing(
    learnable_fashion_mnist, tiny_teacher, small_disk, tmp_path, capsys
):
    run = tmp_path / "run"
    assert main(["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)]) == 0
    disk = small_disk(4, first=True)
    capsys.readouterr()
    assert main(["export", str(run), str(disk / "backbone.safetensors")]) == 2
    assert f"{disk / 'backbone.safetensors'}: No space left on device" in one_line(capsys)
    assert list(disk.iterdir()) == []


def test_logs_on_a_full_disk_name_their_file(small_disk):
    from squeeze_span.methods import load_training_config
    from squeeze_span.train.run import RunFolder

    run = small_disk(64, first=True) / "run"  # the folder's files take 4 KiB pages; the rest fills with logs
    folder = RunFolder(run, load_training_config(CONFIG, []), ["test"])
    folder.open(0)
    try:
        with pytest.raises(OSError) as raised:
            for step in range(1, 10_000):  # each record is a metrics line and a few TensorBoard events
                folder.log({"step": step, "loss": 1.0, "note": "x" * 500})
    finally:
        folder.close()
    logs = {str(run / "metrics.jsonl"), *(str(path) for path in run.glob("events.out.tfevents.*"))}
    assert raised.value.filename in logs and "No space left on device" in str(raised.value)
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1  # what was written stays


def test_sweep_results_and_reports_on_a_full_disk_are_one_line(small_disk, tmp_path, capsys):
    results = tmp_path / "results" / "a"
    results.mkdir(parents=True)
    record = {"name": "a", "seed": 0, "top1": 80.0, "tables": {"2": "a"}, "steps": 1, "seconds": 1.0}
    (results / "seed0.json").write_text(json.dumps(record))
    out = small_disk(4, first=True)
    (out / "filler").write_bytes(b"\0" * 4096)
    assert main(["report", str(tmp_path / "results"), "--out", str(out)]) == 2
    assert "No space left on device" in one_line(capsys) and not temporaries(out)
