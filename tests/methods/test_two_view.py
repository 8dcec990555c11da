"""VICReg and SimSiam, the Table 2 baselines, on real, generated and mixed images."""

import json

import pytest
import torch

from squeeze_span.methods import METHODS, load_training_config
from squeeze_span.methods import simsiam as simsiam_module
from squeeze_span.methods import vicreg as vicreg_module
from squeeze_span.train import Trainer
from squeeze_span.train.trainer import LearningRateSchedule
from tests.conftest import tiny_run_overrides

TWO_VIEW = [(method, data) for method in ("vicreg", "simsiam") for data in ("real", "syn", "mix")]


def make_trainer(config: str, data, teacher, output_dir, method: str, **extra) -> Trainer:
    overrides = tiny_run_overrides(data, teacher, output_dir, method=method, **extra)
    loaded = load_training_config(f"configs/fashion_mnist/{config}.yaml", overrides)
    return Trainer(loaded, METHODS[loaded.method.name], command=["test"])


@pytest.mark.parametrize("method, data", TWO_VIEW, ids=[f"{m}-{d}" for m, d in TWO_VIEW])
def test_each_method_trains_and_its_loss_falls(learnable_fashion_mnist, tmp_path, method, data):
    run = tmp_path / "run"
    # 64 images a step, so that the fall stands out of the noise of a tiny batch. SimSiam's cosines hardly
    # move in 20 steps at the CPU configs' rate (0.1), at which VICReg already trains (and diverges at 0.5).
    settings = {"train.max_steps": 20, "train.batch_size": 64, "optimizer.base_lr": 0.5 if method == "simsiam" else 0.1}
    # The configs' own teacher: a random tiny generator's images hardly differ from each other, and on them
    # no two-view loss can fall much.
    teacher = None if data == "real" else "asset:fashion_mnist_stylegan2"
    trainer = make_trainer(f"{method}_{data}", learnable_fashion_mnist, teacher, run, method, **settings)
    trainer.fit()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 21))
    assert "knn/top1" in lines[-1] and "std" in lines[0]
    first, last = sum(line["loss"] for line in lines[:3]), sum(line["loss"] for line in lines[-3:])
    assert last < first


@pytest.mark.parametrize(
    "method, loss_name", [("vicreg", "vicreg_loss"), ("simsiam", "simsiam_loss")], ids=["vicreg", "simsiam"]
)
def test_a_mixed_batch_is_one_batch_of_real_and_generated_views(
    learnable_fashion_mnist, tiny_teacher, tmp_path, monkeypatch, method, loss_name
):
    trainer = make_trainer(
        f"{method}_mix", learnable_fashion_mnist, tiny_teacher, tmp_path / "run", method, **{"method.syn_ratio": 0.25}
    )
    assert (trainer.synthetic, trainer.real) == (4, 12)  # round(0.25 * 16) generated
    context = trainer.method.context
    augmentation, augmented = context.augmentation, []

    def recording_augmentation(images, generator):
        augmented.append(("real" if images.dtype == torch.uint8 else "generated", len(images)))
        return augmentation(images, generator)

    module = vicreg_module if method == "vicreg" else simsiam_module
    loss, loss_inputs = getattr(module, loss_name), []

    def recording_loss(*args):
        loss_inputs.append([tuple(arg.shape) for arg in args if isinstance(arg, torch.Tensor)])
        return loss(*args)

    monkeypatch.setattr(context, "augmentation", recording_augmentation)
    monkeypatch.setattr(module, loss_name, recording_loss)
    trainer.model(trainer.stream.next(trainer.real), trainer.synthetic)
    assert augmented == [("generated", 4), ("generated", 4), ("real", 12), ("real", 12)]  # two views of each
    assert len(loss_inputs) == 1 and {shape[0] for shape in loss_inputs[0]} == {16}  # one loss on the joint batch


def test_vicreg_on_real_images_is_squeeze_span_with_alpha_0(learnable_fashion_mnist, tmp_path):
    vicreg = make_trainer("vicreg_real", learnable_fashion_mnist, None, tmp_path / "v", "vicreg")
    squeeze_span = make_trainer(
        "squeeze_span", learnable_fashion_mnist, None, tmp_path / "s", "squeeze_span", **{"method.syn_ratio": 0.0}
    )
    logs = {}
    for name, trainer in (("vicreg", vicreg), ("squeeze_span", squeeze_span)):
        assert (trainer.synthetic, trainer.real) == (0, 16)
        logs[name] = trainer.model(trainer.stream.next(trainer.real), trainer.synthetic)
    tolerance = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["vicreg"]["loss"], logs["squeeze_span"]["loss"], **tolerance)
    for term in ("invariance", "variance", "covariance"):
        torch.testing.assert_close(
            logs["vicreg"][f"loss/{term}"], logs["squeeze_span"][f"loss/span/{term}"], **tolerance
        )


def test_the_predictor_keeps_its_learning_rate_while_the_rest_follow_the_schedule(
    learnable_fashion_mnist, tmp_path, monkeypatch
):
    trainer = make_trainer(
        "simsiam_real",
        learnable_fashion_mnist,
        None,
        tmp_path / "run",
        "simsiam",
        **{"optimizer.warmup_steps": 2, "train.max_steps": 6},
    )
    rest, predictor = trainer.optimizer.param_groups
    assert [p for p in predictor["params"]] == list(trainer.method.predictor.parameters())
    assert len(rest["params"]) + len(predictor["params"]) == len(list(trainer.method.parameters()))
    step, rates = trainer.optimizer.step, []

    def recording_step(*args, **kwargs):
        rates.append((rest["lr"], predictor["lr"]))
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer.optimizer, "step", recording_step)
    trainer.fit()
    peak = 0.1 * 16 / 256  # base_lr * batch / 256
    schedule = LearningRateSchedule(peak=peak, warmup_steps=2, total_steps=6)
    assert [predictor_rate for _, predictor_rate in rates] == [peak] * 6
    assert [rest_rate for rest_rate, _ in rates] == pytest.approx([schedule(step, 0.0) for step in range(6)])
    assert rates[0][0] == pytest.approx(peak / 2) and rates[-1][0] < peak / 2  # warm-up, then decay


def test_simsiam_resumes_as_an_uninterrupted_run(learnable_fashion_mnist, tiny_teacher, tmp_path):
    def run(output_dir, **extra):
        trainer = make_trainer(
            "simsiam_mix",
            learnable_fashion_mnist,
            tiny_teacher,
            output_dir,
            "simsiam",
            **{"train.max_steps": 6, **extra},
        )
        trainer.clock = lambda: float(trainer.step)  # one second a step
        trainer.fit()
        return trainer

    stopped = run(tmp_path / "resumed", **{"train.max_seconds": 3, "resume": "auto"})
    assert stopped.step == 3
    resumed = run(tmp_path / "resumed", resume="auto")
    straight = run(tmp_path / "straight")
    assert resumed.step == straight.step == 6
    expected = straight.method.state_dict()
    for name, value in resumed.method.state_dict().items():
        assert torch.equal(value, expected[name]), f"{name} differs after resuming from step 3"
    assert [group["lr"] for group in resumed.optimizer.param_groups] == [
        group["lr"] for group in straight.optimizer.param_groups
    ]
