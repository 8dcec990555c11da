import json
import math

import pytest
import torch

from squeeze_span.cli import main
from squeeze_span.errors import ConfigError
from squeeze_span.methods import METHODS, load_training_config
from squeeze_span.models import load_backbone
from squeeze_span.runtime import resolve_precision
from squeeze_span.train import Trainer, TrainingDiverged
from squeeze_span.train.checkpoint import load_checkpoint
from tests.conftest import tiny_run_overrides

CONFIG = "configs/fashion_mnist/squeeze_span.yaml"


def make_trainer(overrides, config_path=CONFIG):
    config = load_training_config(config_path, overrides)
    return Trainer(config, METHODS[config.method.name], command=["test"])


def test_a_run_writes_its_folder_and_losses_fall(learnable_fashion_mnist, tiny_teacher, tmp_path):
    run = tmp_path / "run"
    trainer = make_trainer(tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run, **{"train.max_steps": 12}))
    record = trainer.fit()
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "command.txt", "metrics.jsonl", "checkpoints"}
    assert any(p.name.startswith("events.out.tfevents.") for p in run.iterdir())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 13))
    assert {"loss", "loss/squeeze/invariance", "loss/span/covariance", "lr", "images_per_s"} <= set(lines[0])
    assert "knn/top1" in lines[-1] and record["step"] == 12
    first, last = sum(line["loss"] for line in lines[:3]), sum(line["loss"] for line in lines[-3:])
    assert last < first
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 12 and state["config"]["train"]["max_steps"] == 12
    assert set(state["rng"][0]) == {"python", "numpy", "torch", "cuda", "augmentation", "teacher"}
    reloaded = load_backbone(run)  # a run folder probes and exports as a backbone
    torch.testing.assert_close(
        reloaded.state_dict()["conv1.weight"], trainer.method.backbone.state_dict()["conv1.weight"]
    )


def test_the_progress_bar_names_the_run_folder_and_the_precision_auto_chose(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys
):
    """The demo trains squeeze_span twice (its VICReg is alpha 0): the folder tells the two bars apart.
    'auto' is bf16 or fp32 by the machine: the bar and the final record say which."""
    run = tmp_path / "vicreg_real"
    overrides = tiny_run_overrides(
        learnable_fashion_mnist, tiny_teacher, run, **{"train.progress": True, "train.precision": "auto"}
    )
    record = make_trainer([*overrides, "method.syn_ratio=0.0"]).fit()
    chosen = resolve_precision("auto", torch.device("cpu"))
    assert f"train squeeze_span, {chosen} ({run})" in capsys.readouterr().err
    assert record["precision"] == chosen


def test_the_batch_splits_by_syn_ratio(learnable_fashion_mnist, tiny_teacher, tmp_path):
    for ratio, expected in [(0.0, (0, 16)), (0.25, (4, 12)), (0.5, (8, 8)), (1.0, (16, 0))]:
        trainer = make_trainer(
            tiny_run_overrides(
                learnable_fashion_mnist, tiny_teacher, tmp_path / str(ratio), **{"method.syn_ratio": ratio}
            )
        )
        assert (trainer.synthetic, trainer.real) == expected
        logs = trainer.model(trainer.stream.next(trainer.real), trainer.synthetic)
        assert ("loss/squeeze" in logs) == (ratio > 0) and ("loss/span" in logs) == (ratio < 1)
        weighted = ratio * logs.get("loss/squeeze", 0) + (1 - ratio) * logs.get("loss/span", 0)
        torch.testing.assert_close(logs["loss"], torch.as_tensor(weighted).float())


def test_squeeze_without_a_teacher_is_a_one_line_error(learnable_fashion_mnist, tmp_path, capsys):
    args = ["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, None, tmp_path / "run")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        "ConfigError: method squeeze_span with syn_ratio > 0 needs a teacher; set teacher.path=FILE"
    )


@pytest.mark.parametrize(
    "checkpoint_every, kept",
    [
        # step 1 at rate 1e9 is finite but its weights' norm is already 1e9 times their start: no good state
        (
            1,
            r"\S+/checkpoints/last.pt holds step 1, but its weights have blown up already \(norm \S+, \S+ at the "
            r"start\): the run must start again, with a lower rate: `squeeze-span train \S+ overwrite=true",
        ),
        (100, r"no checkpoint was written: start again with a lower rate: `squeeze-span train \S+ overwrite=true"),
    ],
)
def test_a_non_finite_loss_names_its_term_and_what_is_kept(
    learnable_fashion_mnist, tiny_teacher, tmp_path, checkpoint_every, kept
):
    run = tmp_path / "run"
    overrides = tiny_run_overrides(
        learnable_fashion_mnist,
        tiny_teacher,
        run,
        **{"optimizer.base_lr": 1e9, "train.checkpoint_every": checkpoint_every},
    )
    with pytest.raises(
        TrainingDiverged,
        match=rf"^loss/\S+ became (nan|inf) at step 2; the run stopped and {kept} optimizer.base_lr=1e\+08`",
    ):
        make_trainer(overrides).fit()  # the first step is finite: a good state can be saved
    assert (run / "checkpoints" / "last.pt").exists() == (checkpoint_every == 1)


def test_non_finite_weights_are_never_checkpointed(learnable_fashion_mnist, tiny_teacher, tmp_path, monkeypatch):
    """A step whose loss was finite can leave non-finite weights; they must not overwrite the last good state."""
    run = tmp_path / "run"
    trainer = make_trainer(
        tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run, **{"train.checkpoint_every": 1})
    )
    update = trainer.scaler.update

    def update_then_poison_in_step_2(*args, **kwargs):
        update(*args, **kwargs)
        if trainer.step == 1:  # the optimizer has just made step 2
            with torch.no_grad():
                trainer.method.backbone.conv1.weight[0, 0, 0, 0] = float("nan")

    monkeypatch.setattr(trainer.scaler, "update", update_then_poison_in_step_2)
    with pytest.raises(TrainingDiverged) as error:
        trainer.fit()
    assert str(error.value).startswith(
        f"method.backbone.conv1.weight became non-finite at step 2; the run stopped and "
        f"{run / 'checkpoints' / 'last.pt'} holds step 1. Resume it with a lower rate"
    )
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 1 and all(value.isfinite().all() for value in state["method"].values())


def test_a_failing_knn_monitor_runs_after_the_checkpoint(learnable_fashion_mnist, tiny_teacher, tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer = make_trainer(tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run))  # kNN only at step 4

    def broken_monitor():
        raise RuntimeError("the monitor broke")

    monkeypatch.setattr(trainer, "knn_monitor", broken_monitor)
    with pytest.raises(RuntimeError, match="the monitor broke"):
        trainer.fit()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4  # resume=auto would not repeat the steps


def test_unknown_keys_name_the_closest_valid_one(capsys):
    assert main(["train", CONFIG, "train.max_step=3"]) == 2
    assert (
        "unknown config key 'train.max_step' in the command line; did you mean 'train.max_steps'?"
        in capsys.readouterr().err
    )


def test_a_time_budget_stops_with_a_checkpoint(learnable_fashion_mnist, tiny_teacher, tmp_path):
    run = tmp_path / "run"
    trainer = make_trainer(
        tiny_run_overrides(
            learnable_fashion_mnist, tiny_teacher, run, **{"train.max_seconds": 1e-9, "train.max_steps": 50}
        )
    )
    record = trainer.fit()
    assert record["step"] == 1 and "knn/top1" in record
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1


def steps_clock(trainer: Trainer, seconds_per_step: list[float]):
    """A clock that reads the seconds the trainer's steps so far took: ``seconds_per_step[k]`` for step k + 1."""
    return lambda: sum(seconds_per_step[: trainer.step])


def budgeted_run(data, teacher, run, seconds_per_step, **extra):
    overrides = tiny_run_overrides(
        data, teacher, run, **{"train.max_steps": None, "train.budget_seconds": 20, "train.checkpoint_every": 100}
    )
    trainer = make_trainer(overrides + [f"{key}={value}" for key, value in extra.items()])
    trainer.clock = steps_clock(trainer, seconds_per_step)
    trainer.fit()
    return trainer, [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_time_budget_schedules_by_time_and_a_slowdown_costs_steps_not_the_schedule(
    learnable_fashion_mnist, tiny_teacher, tmp_path
):
    # Five steps of 1 s, then the machine slows to 4 s a step: the 20 s budget ends after step 9 (21 s).
    seconds_per_step = [1.0] * 5 + [4.0] * 20
    trainer, lines = budgeted_run(learnable_fashion_mnist, tiny_teacher, tmp_path / "run", seconds_per_step)
    assert [line["step"] for line in lines] == list(range(1, 10))
    assert [line["seconds"] for line in lines] == [1, 2, 3, 4, 5, 9, 13, 17, 21]
    peak = 0.1 * 16 / 256  # base_lr * batch / 256
    for line in lines:  # the rate of the next step follows the fraction of the budget spent, not the step
        assert line["lr"] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * min(line["seconds"] / 20, 1))))
    assert lines[-1]["lr"] == 0.0  # the schedule ended with the budget
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 9 and state["elapsed_seconds"] == 21


def test_a_time_budget_s_progress_bar_counts_seconds_and_shows_the_step(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys
):
    seconds_per_step = [1.0] * 5 + [4.0] * 20
    budgeted_run(learnable_fashion_mnist, tiny_teacher, tmp_path / "run", seconds_per_step, **{"train.progress": True})
    final = capsys.readouterr().err.split("\r")[-1]
    assert "| 20/20 [" in final and "step=9, img_s=" in final


def test_a_time_budget_carries_over_a_resume(learnable_fashion_mnist, tiny_teacher, tmp_path):
    seconds_per_step = [1.0] * 5 + [4.0] * 20
    run = tmp_path / "run"
    # The first invocation stops after 6 s of its own (step 6, 9 s of the budget), the second finishes it.
    _, first = budgeted_run(learnable_fashion_mnist, tiny_teacher, run, seconds_per_step, **{"train.max_seconds": 6})
    assert first[-1]["step"] == 6 and first[-1]["seconds"] == 9
    _, lines = budgeted_run(learnable_fashion_mnist, tiny_teacher, run, seconds_per_step, resume="auto")
    assert [line["step"] for line in lines] == list(range(1, 10)) and lines[-1]["lr"] == 0.0


def test_a_time_budget_and_a_step_count_are_not_both_accepted(learnable_fashion_mnist, tiny_teacher, tmp_path):
    overrides = tiny_run_overrides(
        learnable_fashion_mnist, tiny_teacher, tmp_path / "run", **{"train.budget_seconds": 5}
    )
    with pytest.raises(ConfigError, match="train.budget_seconds and train.max_steps both set the run's length"):
        make_trainer(overrides)


VICREG = (
    "configs/fashion_mnist/vicreg_real.yaml"  # at rate 10 this tiny VICReg blows up within 4 steps; at 1 it holds 8
)


def test_following_the_advice_of_a_divergence_runs_on(learnable_fashion_mnist, tmp_path, capsys):
    """Trained at 0.1 to step 2, resumed at 10: step 4's checkpoint already carries the blow-up, so step 2
    is kept, and the command in the message (a rate ten times lower) trains on to the end."""
    run = tmp_path / "run"
    args = ["train", VICREG, *tiny_run_overrides(learnable_fashion_mnist, None, run, method="vicreg")]
    assert main([*args, "train.max_steps=2", "train.checkpoint_every=2"]) == 0
    assert main([*args, "train.max_steps=6", "train.checkpoint_every=2", "resume=auto", "optimizer.base_lr=10"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("TrainingDiverged: ")
    assert f"{run / 'checkpoints' / 'last.pt'} holds step 2 (step 4 had already begun to blow up" in error
    command = error.split("`")[1]
    assert command == f"squeeze-span train {run / 'config.yaml'} resume=auto optimizer.base_lr=1"
    assert main(command.split()[1:]) == 0  # the advice, followed as written
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6


def test_a_run_blown_up_before_its_first_checkpoint_is_told_to_start_again(learnable_fashion_mnist, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", VICREG, *tiny_run_overrides(learnable_fashion_mnist, None, run, method="vicreg")]
    assert main([*args, "optimizer.base_lr=10", "train.max_steps=6", "train.checkpoint_every=2"]) == 2
    error = capsys.readouterr().err
    assert "holds step 2, but its weights have blown up already" in error and "the run must start again" in error
    command = error.split("`")[1]
    assert command == f"squeeze-span train {run / 'config.yaml'} overwrite=true optimizer.base_lr=1"
    assert main(command.split()[1:]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6


def test_a_checkpoint_that_carries_the_blow_up_is_set_aside_for_the_one_before(tmp_path):
    from squeeze_span.train.checkpoint import save_checkpoint
    from squeeze_span.train.run import RunFolder, blown_up
    from tests.train.test_checkpoint import _honest_state

    folder = RunFolder(tmp_path, None, ["test"])
    checkpoints = tmp_path / "checkpoints"
    honest = _honest_state()  # a checkpoint as a trainer writes it
    save_checkpoint({**honest, "step": 4, "health": {"weight_norm": 10.0, "loss": 20.0}}, checkpoints / "previous.pt")
    save_checkpoint({**honest, "step": 6, "health": {"weight_norm": 10.5, "loss": 19.0}}, checkpoints / "last.pt")
    assert folder.keep_healthy() == (f"{checkpoints / 'last.pt'} holds step 6", True)  # a few percent: healthy
    save_checkpoint({**honest, "step": 6, "health": {"weight_norm": 95.0, "loss": 19.0}}, checkpoints / "last.pt")
    assert folder.keep_healthy() == (
        f"{checkpoints / 'last.pt'} holds step 4 (step 6 had already begun to blow up: set aside as diverged.pt)",
        True,
    )
    assert load_checkpoint(checkpoints / "last.pt")["step"] == 4
    assert load_checkpoint(checkpoints / "diverged.pt")["step"] == 6
    assert not (checkpoints / "previous.pt").exists()
    assert blown_up({"weight_norm": 1.0, "loss": 1.0}, {"weight_norm": 1.1, "loss": 9.0})  # the loss alone
    assert not blown_up(None, {"weight_norm": 99.0, "loss": None})  # written before health was recorded
