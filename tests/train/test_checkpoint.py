"""Checkpoints: a malicious one is refused without running it, a failed write keeps the old one."""

import errno
import os
from pathlib import Path

import pytest
import torch

from squeeze_span.cli import main
from squeeze_span.errors import CheckpointError
from squeeze_span.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from tests.conftest import tiny_run_overrides
from tests.train.test_trainer import CONFIG


def test_a_checkpoint_that_asks_for_code_is_refused_naming_the_global(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys
):
    pwned = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {pwned}",))

    evil = tmp_path / "evil.pt"
    save_checkpoint({"step": Payload()}, evil)
    overrides = tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, tmp_path / "run", resume=evil)
    assert main(["train", CONFIG, *overrides]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"UnsafePickleError: {evil} asks for the global posix.system")
    assert "weights_only" not in error and "refused and nothing from the file was executed" in error
    assert not pwned.exists()


def test_a_truncated_checkpoint_is_one_line_with_torchs_reason(tmp_path):
    path = save_checkpoint({"step": 3, "weights": torch.randn(64, 64)}, tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path} is not a readable squeeze-span checkpoint (") and "\n" not in message
    assert "not a torch zip archive" not in message  # torch's own reason is shown for an archive
    assert message.endswith("; it is truncated or another kind of file: copy it again, or pass another")


def test_resuming_from_a_text_file_says_it_is_not_a_torch_archive(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys
):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_text("not a checkpoint\n")
    overrides = tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run, resume="auto")
    assert main(["train", CONFIG, *overrides]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"CheckpointError: {run / 'checkpoints' / 'last.pt'} is not a readable squeeze-span checkpoint "
        "(not a torch zip archive); it is truncated or another kind of file: copy it again, or pass another\n"
    )


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"step": 3}, path)

    def full_disk(self, data):
        with self.open("wb") as file:
            file.write(bytes(data)[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full_disk)  # tests/test_full_disk.py does it on a real disk
    with pytest.raises(OSError, match=r"No space left on device \(it needs more than the 0 KiB written") as raised:
        save_checkpoint({"step": 4}, path)
    assert raised.value.filename == str(path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 3 and list(path.parent.iterdir()) == [path]


def test_a_random_state_from_another_kind_of_device_is_one_line():
    state = capture_rng({})
    state["augmentation"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
    with pytest.raises(CheckpointError, match="augmentation random state comes from another kind of device than cpu"):
        restore_rng(state, {"augmentation": torch.Generator()})
