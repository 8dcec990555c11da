"""Checkpoints: a malicious one is refused without running it, a failed write keeps the old one."""

import errno
import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import strategies as st

from squeeze_span.cli import main
from squeeze_span.errors import CheckpointError
from squeeze_span.train.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_optimizer_state,
    restore_rng,
    save_checkpoint,
)
from tests.conftest import hostile, refused_or_loaded, tiny_run_overrides
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
    save_checkpoint({**_honest_state(), "step": 3}, path)

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


def _honest_state() -> dict:
    """What the trainer checkpoints, in miniature."""
    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([parameter], lr=0.1, momentum=0.9)
    parameter.grad = torch.ones(2)
    optimizer.step()
    return {
        "step": 3,
        "config": {"train": {"max_steps": 4}},
        "method": {"backbone.weight": torch.ones(2)},
        "backbone": {"arch": "resnet18_cifar", "in_channels": 3, "width": 4, "num_classes": 0},
        "optimizer": optimizer.state_dict(),
        "scaler": {},
        "elapsed_seconds": 1.5,
        "stream": {"epoch": 1, "position": 5},
        "rng": [capture_rng({"augmentation": torch.Generator()})],
        "log": None,
    }


def _read_as_the_trainer_does(state: dict) -> None:
    """What ResumableRun.resume and Trainer.load_extra_state do with a checkpoint's entries."""
    parameter = torch.nn.Parameter(torch.ones(2))
    load_optimizer_state(torch.optim.SGD([parameter], lr=0.1, momentum=0.9), state["optimizer"])
    restore_rng(state["rng"][0], {"augmentation": torch.Generator()})
    int(state["step"]), int(state["stream"]["epoch"]), int(state["stream"]["position"])
    float(state.get("elapsed_seconds", 0.0))


hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_subnormal=False),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.builds(torch.zeros, st.integers(min_value=0, max_value=3)),
)
# Where a lie may sit: an entry, or a value inside the random states, the stream or the optimizer.
PLACES = [
    ("step",),
    ("config",),
    ("method",),
    ("optimizer",),
    ("optimizer", "param_groups"),
    ("scaler",),
    ("elapsed_seconds",),
    ("stream",),
    ("stream", "epoch"),
    ("stream", "position"),
    ("rng",),
    ("rng", 0),
    ("rng", 0, "python"),
    ("rng", 0, "numpy"),
    ("rng", 0, "torch"),
    ("rng", 0, "cuda"),
    ("rng", 0, "augmentation"),
    ("log",),
]


@hostile(place=st.sampled_from(PLACES), value=hostile_values, drop=st.booleans())
def test_a_checkpoint_with_a_malformed_entry_loads_readably_or_is_one_line(place, value, drop, tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "last.pt"
    state = _honest_state()
    *outer, key = place
    container = state
    for step in outer:
        container = container[step]
    if drop and isinstance(container, dict):
        del container[key]
    else:
        container[key] = value
    save_checkpoint(state, path)
    loaded = refused_or_loaded(lambda: load_checkpoint(path), CheckpointError)
    if loaded is not None:  # what is admitted, the trainer reads, or refuses in one line (a missing generator)
        try:
            _read_as_the_trainer_does(loaded)
        except CheckpointError as refusal:
            assert "\n" not in str(refusal)


def test_an_honest_checkpoint_loads_exactly(tmp_path):
    state = _honest_state()
    loaded = load_checkpoint(save_checkpoint(state, tmp_path / "last.pt"))
    assert loaded["step"] == 3 and loaded["stream"] == state["stream"]
    _read_as_the_trainer_does(loaded)


@pytest.mark.parametrize(
    ("place", "value", "refusal"),
    [
        (("step",), "3", "its 'step' entry is a str, not a count of steps"),
        (("rng", 0, "python"), (3, (2**32,) * 625, None), "its 'rng' entry is a list, not a list of each rank's"),
        (("rng", 0, "torch"), torch.zeros(3, dtype=torch.uint8), "its 'rng' entry"),
        (("stream",), {"epoch": -1, "position": 0}, "its 'stream' entry is a dict, not a mapping of the epoch"),
        (("optimizer",), {"state": {}}, "its 'optimizer' entry is a dict, not an optimizer's state dict"),
    ],
)
def test_malformed_entries_are_named(place, value, refusal, tmp_path):
    state = _honest_state()
    *outer, key = place
    container = state
    for step in outer:
        container = container[step]
    container[key] = value
    path = save_checkpoint(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=f"^{path} is not a checkpoint squeeze-span wrote: {re.escape(refusal)}"):
        load_checkpoint(path)
