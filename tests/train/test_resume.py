"""A run killed with SIGKILL in mid-run, then resumed, ends with the weights of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from squeeze_span.train.checkpoint import load_checkpoint
from tests.conftest import tiny_run_overrides
from tests.train.test_trainer import CONFIG, make_trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("pool_size", [0, 24], ids=["teacher", "teacher-pool"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(learnable_fashion_mnist, tiny_teacher, tmp_path, pool_size):
    settings = {"train.max_steps": 12, "train.checkpoint_every": 3, "resume": "auto", "teacher.pool_size": pool_size}
    killed = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "squeeze_span.cli",
        "train",
        CONFIG,
        *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, killed, **settings),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved_step = load_checkpoint(checkpoint)["step"]
    assert 3 <= saved_step < 12, f"the run was not killed in mid-run (stderr: {process.stderr.read().decode()[-500:]})"

    resumed = make_trainer(tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, killed, **settings))
    resumed.fit()
    straight = make_trainer(
        tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, tmp_path / "straight", **settings)
    )
    straight.fit()

    expected = straight.method.state_dict()
    for name, value in resumed.method.state_dict().items():
        assert torch.equal(value, expected[name]), f"{name} differs after resuming from step {saved_step}"
    steps = [int(line.split(",")[0].split(":")[1]) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # lines past the checkpoint were dropped on resume, then rewritten
