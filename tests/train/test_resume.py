"""Resume: after SIGKILL a run ends with the weights of an uninterrupted one; changed settings are applied
and recorded, or refused when they would make another run; a finished run is left alone."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from squeeze_span.cli import main
from squeeze_span.train.checkpoint import load_checkpoint
from squeeze_span.train.trainer import LearningRateSchedule
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


def test_a_kill_between_a_checkpoint_and_its_log_line_loses_no_line(learnable_fashion_mnist, tiny_teacher, tmp_path):
    run = tmp_path / "run"
    make_trainer(tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)).fit()  # checkpoints at 2 and 4
    metrics = run / "metrics.jsonl"
    written = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(written[:3]))  # as if killed after the checkpoint of step 4, before its line
    make_trainer(
        tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run, resume="auto", **{"train.max_steps": 6})
    ).fit()
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[3]["loss"] == json.loads(written[3])["loss"]  # the line the checkpoint held


def test_resume_applies_changed_optimizer_settings_and_records_them(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys
):
    run = tmp_path / "run"
    make_trainer(tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)).fit()
    changed = {"optimizer.base_lr": 0.001, "optimizer.momentum": 0.5, "train.max_steps": 6, "resume": "auto"}
    resumed = make_trainer(tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run, **changed))
    resumed.fit()

    schedule = LearningRateSchedule(peak=0.001 * 16 / 256, total_steps=6)  # the new rate and the new length
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[4]["lr"] == pytest.approx(schedule(5, 0.0))
    group = resumed.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(schedule(5, 0.0)) and group["momentum"] == 0.5
    record = "step 4: optimizer.base_lr 0.1 -> 0.001, optimizer.momentum 0.9 -> 0.5, train.max_steps 4 -> 6"
    assert (run / "changes.txt").read_text() == record + "\n"
    assert f"resuming at step 4 with changed settings: {record[len('step 4: ') :]}" in capsys.readouterr().out


def test_resume_refuses_a_changed_batch_size_or_seed(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    run = tmp_path / "run"
    make_trainer(tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run, **{"train.max_steps": 2})).fit()
    config = (run / "config.yaml").read_text()
    for key, old, new in [("train.batch_size", 16, 32), ("train.seed", 0, 1)]:
        overrides = tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run, **{key: new, "resume": "auto"})
        assert main(["train", CONFIG, *overrides]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith(f"ConfigError: {run / 'checkpoints' / 'last.pt'} was")
        assert f"trained with {key}={old}, which cannot change on resume (this config has {key}={new})" in error
        assert error.endswith(f"resume with {key}={old}, or start a new run in another output_dir\n")
    assert (run / "config.yaml").read_text() == config


def test_rerunning_a_finished_run_changes_nothing(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run, resume="auto")]
    assert main(args) == 0
    files = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out == (
        f"the run in {run} is already complete at step 4; nothing was changed "
        "(raise train.max_steps or train.epochs to train on)\n"
    )
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == files


def test_a_run_without_resume_never_replaces_a_run_in_its_folder(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys
):
    run = tmp_path / "run"
    args = ["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)]
    assert main(args) == 0
    files = {path: path.read_bytes() for path in run.rglob("*") if path.is_file() and path.name != "command.txt"}
    capsys.readouterr()
    for again in (args, [*args, "train.batch_size=8"]):  # the same command, or a changed batch
        assert main(again) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1
        assert error.startswith(f"ConfigError: output_dir {run} already holds a run (checkpoints/")
        assert "resume=auto" in error and "new output_dir" in error and "overwrite=true" in error
        now = {path: path.read_bytes() for path in run.rglob("*") if path.is_file() and path.name != "command.txt"}
        assert now == files  # nothing written: no checkpoint, metric or events file changed or added


def test_overwrite_starts_the_run_over_and_clears_its_old_records(learnable_fashion_mnist, tiny_teacher, tmp_path):
    run = tmp_path / "run"
    args = ["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)]
    assert main(args) == 0
    (run / "changes.txt").write_text("step 2: from an older resume\n")
    assert main([*args, "train.max_steps=2", "overwrite=true"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # the old run's four steps are gone, not mixed in
    assert len(list(run.glob("events.out.tfevents.*"))) == 1 and not (run / "changes.txt").exists()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert main([*args, "resume=auto", "overwrite=true"]) == 2  # continue or start over: not both
