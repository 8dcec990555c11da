import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from squeeze_span.cli import main
from squeeze_span.errors import ConfigError
from squeeze_span.experiments.plan import load_plan
from squeeze_span.experiments.sweep import run_sweep
from tests.conftest import tiny_run_overrides

CONFIG = "configs/fashion_mnist/squeeze_span.yaml"


def write_plan(tmp_path: Path, data: Path, teacher: Path, **changes) -> Path:
    training = [o for o in tiny_run_overrides(data, teacher, tmp_path / "unused") if not o.startswith("output_dir")]
    plan = {
        "dataset": "fashion_mnist",
        "data_root": str(data),
        "runs_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
        "overrides": training,
        "fd_images": 40,
        "knn_ks": [5],
        "labels_per_class": [10],
        "draws": 2,
        "entries": [
            {
                "name": "squeeze_span",
                "config": CONFIG,
                "seeds": [0, 1],
                "tables": {"2": "squeeze and span"},
                "fd": True,
                "discrepancy": True,
            },
            {"name": "random_init", "kind": "random_init", "config": CONFIG, "tables": {"2": "random init"}},
            {"name": "pixels", "kind": "pixels", "tables": {"2": "raw pixels"}},
        ],
    }
    plan.update(changes)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_a_sweep_writes_one_result_per_entry_and_seed_then_skips_them(learnable_fashion_mnist, tiny_teacher, tmp_path):
    plan = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher)
    outcome = run_sweep(plan, device="cpu", progress=False)
    # Seed by seed within a stage: every entry's first seed, then the second.
    assert outcome.done == ["squeeze_span seed 0", "random_init seed 0", "pixels seed 0", "squeeze_span seed 1"]
    assert not outcome.failed
    result = json.loads((tmp_path / "results" / "squeeze_span" / "seed1.json").read_text())
    assert (result["method"], result["data"], result["seed"], result["steps"]) == ("squeeze_span", "mix", 1, 4)
    assert result["tables"] == {"2": "squeeze and span"}
    assert 50 < result["top1"] <= 100  # the tiny data's two classes differ in brightness
    assert result["fd"]["metric"] == "FD-fashion_mnist-classifier" and result["fd"]["value"] > 0
    assert result["discrepancy"]["value"] > 0 and result["discrepancy"]["relative"] > 0
    pixels = json.loads((tmp_path / "results" / "pixels" / "seed0.json").read_text())
    assert pixels["top1"] > 90
    again = run_sweep(plan, device="cpu", progress=False)
    assert again.done == [] and len(again.skipped) == 4


def test_a_finished_result_gets_the_relative_discrepancy_from_its_saved_run(
    learnable_fashion_mnist, tiny_teacher, tmp_path
):
    plan = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher)
    run_sweep(plan, device="cpu", progress=False, only=["squeeze_span"])
    path = tmp_path / "results" / "squeeze_span" / "seed0.json"
    measured = json.loads(path.read_text())
    older = {**measured, "discrepancy": {"value": measured["discrepancy"]["value"]}}  # as results were made before
    path.write_text(json.dumps(older))
    outcome = run_sweep(plan, device="cpu", progress=False, only=["squeeze_span"])
    assert outcome.done == []
    completed = json.loads(path.read_text())
    assert completed["discrepancy"]["relative"] == pytest.approx(measured["discrepancy"]["relative"], rel=0.02)
    assert completed["top1"] == measured["top1"]  # the rest of the result is kept, not re-run


def test_a_result_made_under_other_settings_is_refused_not_mixed_in(learnable_fashion_mnist, tiny_teacher, tmp_path):
    plan = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher)
    run_sweep(plan, device="cpu", progress=False, only=["pixels"])
    changed = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher, split="validation")
    with pytest.raises(ConfigError, match=r"pixels/seed0.json was made with other settings .* delete it"):
        run_sweep(changed, device="cpu", progress=False)


def test_a_failing_entry_is_one_line_and_the_others_run(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    plan = write_plan(
        tmp_path,
        learnable_fashion_mnist,
        tiny_teacher,
        entries=[
            {"name": "broken", "config": "configs/fashion_mnist/no_such.yaml"},
            {"name": "pixels", "kind": "pixels"},
        ],
    )
    assert main(["sweep", str(plan), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "failed: broken seed 0: ConfigError:" in err and "no_such.yaml" in err
    assert "1 of the sweep's runs failed" in err
    assert (tmp_path / "results" / "pixels" / "seed0.json").is_file()


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"name": "a", "kind": "pixels"}, {"name": "a", "kind": "pixels"}], "the name 'a' is used twice"),
        ([{"name": "t"}], "kind train needs config"),
        ([{"name": "d", "kind": "discriminator"}], "kind discriminator needs model"),
        ([{"name": "p", "kind": "pixels", "fd": True}], "fd and discrepancy are measured on train entries only"),
        ([{"name": "bad/name", "kind": "pixels"}], "needs a name of letters"),
        ([{"name": "p", "kind": "pixel"}], r"entries\[0\].kind=.pixel. is unknown; it must be one of train"),
        ([{"name": "p", "kind": "pixels", "split": "train"}], "split 'train' must be test or validation"),
    ],
)
def test_a_bad_plan_is_one_config_error(tmp_path, entries, message):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"entries": entries}))
    with pytest.raises(ConfigError, match=message):
        load_plan(path)


def test_an_entry_can_score_on_validation_not_test(learnable_fashion_mnist, tiny_teacher, tmp_path):
    entries = [
        {"name": "pixels", "kind": "pixels"},
        {"name": "pixels_validation", "kind": "pixels", "split": "validation"},
    ]
    plan = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher, entries=entries)
    run_sweep(plan, device="cpu", progress=False)
    splits = {
        name: json.loads((tmp_path / "results" / name / "seed0.json").read_text())["probe"]["split"]
        for name in ("pixels", "pixels_validation")
    }
    assert splits == {"pixels": "test", "pixels_validation": "validation"}


@pytest.mark.parametrize("plan_path", ["results/fashion_mnist/plan.yaml", "results/fashion_mnist/length/plan.yaml"])
def test_the_committed_results_were_made_under_the_committed_plan(plan_path):
    """A change to what decides a result (the spec) would silently turn hours of runs stale."""
    from squeeze_span.experiments.plan import entry_spec, spec_hash

    plan = load_plan(plan_path)
    entries = {entry.name: entry for entry in plan.entries}
    results = sorted(Path(plan.results_dir).glob("*/seed*.json"))
    assert results, f"{plan.results_dir} holds no results"
    for path in results:
        result = json.loads(path.read_text())
        assert result["spec_hash"] == spec_hash(entry_spec(plan, entries[result["name"]], result["seed"])), path


def test_where_the_data_lives_is_not_part_of_a_result_spec(tmp_path):
    """scripts/length_on_gpu.sh points the plan at carried files: its results must count as the plan's own."""
    from squeeze_span.experiments.plan import entry_spec, spec_hash

    data = yaml.safe_load(Path("results/fashion_mnist/length/plan.yaml").read_text())
    moved = tmp_path / "plan.yaml"
    moved.write_text(yaml.safe_dump({**data, "data_root": str(tmp_path / "fashion-mnist")}))
    plan, elsewhere = load_plan("results/fashion_mnist/length/plan.yaml"), load_plan(moved)
    assert elsewhere.data_root == str(tmp_path / "fashion-mnist")
    for entry, moved_entry in zip(plan.entries, elsewhere.entries, strict=True):
        for seed in plan.seeds:
            assert spec_hash(entry_spec(plan, entry, seed)) == spec_hash(entry_spec(elsewhere, moved_entry, seed))


def test_stages_run_in_order_and_a_claimed_run_is_left_to_its_sweep(learnable_fashion_mnist, tiny_teacher, tmp_path):
    from squeeze_span.experiments.sweep import claimed, jobs_of

    plan = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher)
    data = yaml.safe_load(plan.read_text())
    data["entries"][0]["stage"] = 1  # squeeze_span after the two probes of stage 0
    data["entries"][0]["keep_backbone"] = True
    plan.write_text(yaml.safe_dump(data))
    jobs = jobs_of(load_plan(plan))
    assert [(job.entry.name, job.seed) for job in jobs] == [
        ("random_init", 0),
        ("pixels", 0),
        ("squeeze_span", 0),
        ("squeeze_span", 1),
    ]
    with claimed(load_plan(plan), jobs[0]) as mine:  # another sweep holds random_init
        assert mine
        outcome = run_sweep(plan, device="cpu", progress=False)
    assert outcome.done == ["pixels seed 0", "squeeze_span seed 0", "squeeze_span seed 1"]
    assert "random_init seed 0" in outcome.skipped
    result = json.loads((tmp_path / "results" / "squeeze_span" / "seed0.json").read_text())
    from squeeze_span.models import load_backbone

    kept = load_backbone(tmp_path / "results" / "squeeze_span" / result["backbone"])
    trained = load_backbone(tmp_path / "runs" / "squeeze_span" / "seed0")
    for key, value in trained.state_dict().items():  # bf16 keeps 8 bits of mantissa
        torch.testing.assert_close(kept.state_dict()[key], value, rtol=1 / 128, atol=1e-6, check_dtype=False)

    # Every protocol is recorded; one added to the plan later is measured on the kept backbone alone.
    assert set(result["knn"]) == {"5"} and len(result["few_labels"]["10"]["draws"]) == 2
    data["knn_ks"] = [5, 7]
    plan.write_text(yaml.safe_dump(data))
    (tmp_path / "runs" / "squeeze_span").rename(tmp_path / "gone")  # the run folder is gone, the kept file stays
    run_sweep(plan, device="cpu", progress=False)
    completed = json.loads((tmp_path / "results" / "squeeze_span" / "seed0.json").read_text())
    assert set(completed["knn"]) == {"5", "7"} and completed["knn"]["5"] == result["knn"]["5"]
    assert completed["top1"] == result["top1"] and completed["few_labels"] == result["few_labels"]
    random_init = json.loads((tmp_path / "results" / "random_init" / "seed0.json").read_text())
    assert set(random_init["knn"]) == {"5", "7"}  # run once the claim was let go, with both

    # More draws for the primary protocol: its few-label probe is measured again, the draws it had come out
    # the same, and another few-label probe keeps the plan's count.
    data.update(labels_per_class=[10, 4], primary_protocol="linear_10", primary_draws=3)
    plan.write_text(yaml.safe_dump(data))
    run_sweep(plan, device="cpu", progress=False)
    redrawn = json.loads((tmp_path / "results" / "squeeze_span" / "seed0.json").read_text())["few_labels"]
    assert len(redrawn["10"]["draws"]) == 3 and len(redrawn["4"]["draws"]) == 2
    assert redrawn["10"]["draws"][:2] == pytest.approx(result["few_labels"]["10"]["draws"], abs=0.02)

    # With its run folder back, a run is rescored from its own weights, not from the bf16 file.
    from squeeze_span.experiments.sweep import Runner

    (tmp_path / "gone").rename(tmp_path / "runs" / "squeeze_span")
    job = next(job for job in jobs_of(load_plan(plan)) if (job.entry.name, job.seed) == ("squeeze_span", 0))
    model, _, _ = Runner(load_plan(plan), torch.device("cpu"), False, command=[])._model_of(job)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_a_run_is_expected_to_take_its_settings_pace_times_the_steps_it_has_left(
    learnable_fashion_mnist, tiny_teacher, tmp_path
):
    from squeeze_span.experiments.plan import spec_hash
    from squeeze_span.experiments.sweep import Runner, jobs_of
    from squeeze_span.runtime import machine_description

    plan = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher)
    data = yaml.safe_load(plan.read_text())
    short, fp32 = dict(data["entries"][0]), dict(data["entries"][0])
    short.update(name="short", overrides=["train.max_steps=100"], seeds=[0, 1, 2])
    fp32.update(name="fp32_long", overrides=["train.max_steps=300", "train.precision=bf16"])
    long = {**short, "name": "long", "overrides": ["train.max_steps=300", "train.checkpoint_every=100"]}
    data["entries"] = [short, long, fp32, data["entries"][2]]
    plan.write_text(yaml.safe_dump(data))
    jobs = {(job.entry.name, job.seed): job for job in jobs_of(load_plan(plan))}
    runner = Runner(load_plan(plan), torch.device("cpu"), False, command=[])
    assert runner.expected_seconds(jobs["long", 0], list(jobs.values())) is None  # nothing of its settings yet

    here = machine_description(torch.device("cpu"))
    for seed, seconds, machine in ((0, 150.0, here), (1, 250.0, here), (2, 1.0, "a GPU machine")):
        result = jobs["short", seed].result  # here: 1.5 and 2.5 s a step, 20 s of probing
        result.parent.mkdir(parents=True, exist_ok=True)
        record = {"steps": 100, "seconds": seconds, "probe": {"seconds": 20.0}, "machine": machine}
        result.write_text(json.dumps({**record, "spec_hash": spec_hash(jobs["short", seed].spec)}))
    every = list(jobs.values())
    assert runner.expected_seconds(jobs["long", 1], every) == pytest.approx(2.0 * 300 + 20)  # not the GPU's pace
    assert runner.expected_seconds(jobs["fp32_long", 0], every) is None  # another precision, another pace
    assert runner.expected_seconds(jobs["pixels", 0], every) is None  # nothing to train
    stale = jobs["short", 1].result  # made under other settings, or unreadable: it sets no pace
    kept = stale.read_text()
    stale.write_text(json.dumps({**json.loads(kept), "spec_hash": "another"}))
    assert runner.expected_seconds(jobs["long", 1], every) == pytest.approx(1.5 * 300 + 20)
    stale.write_text("{not json")
    assert runner.expected_seconds(jobs["long", 1], every) == pytest.approx(1.5 * 300 + 20)
    stale.write_text(kept)

    half_done = tmp_path / "runs" / "long" / "seed1"
    half_done.mkdir(parents=True)
    (half_done / "metrics.jsonl").write_text("")  # stopped before its first log: all its steps are left
    assert runner.expected_seconds(jobs["long", 1], every) == pytest.approx(2.0 * 300 + 20)
    (half_done / "metrics.jsonl").write_text(json.dumps({"step": 120, "loss": 1.0}) + "\n")  # resumes near 120
    assert runner.expected_seconds(jobs["long", 1], every) == pytest.approx(2.0 * 180 + 20)

    # A finished long run weighs by its steps: (150 + 250 + 150) s over (100 + 100 + 300) steps is 1.1 s a
    # step, where the mean of the three runs' paces (1.5, 2.5, 0.5) would say 1.5.
    long_result = jobs["long", 0].result
    long_result.parent.mkdir(parents=True, exist_ok=True)
    record = {"steps": 300, "seconds": 150.0, "probe": {"seconds": 50.0}, "machine": here}
    long_result.write_text(json.dumps({**record, "spec_hash": spec_hash(jobs["long", 0].spec)}))
    assert runner.expected_seconds(jobs["long", 1], every) == pytest.approx(1.1 * 180 + 30)


def test_a_sweep_with_a_time_limit_leaves_the_runs_it_cannot_finish(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys
):
    plan = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher)
    entries = yaml.safe_load(plan.read_text())["entries"]
    entries[0]["seeds"] = [0, 1, 2]
    plan = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher, entries=entries)
    run_sweep(plan, device="cpu", progress=False)
    finished = tmp_path / "results" / "squeeze_span" / "seed0.json"
    result = json.loads(finished.read_text())
    finished.write_text(json.dumps({**result, "seconds": 1e5}))  # as if its 4 steps had taken a day
    for seed in (1, 2):
        (tmp_path / "results" / "squeeze_span" / f"seed{seed}.json").unlink()
        shutil.rmtree(tmp_path / "runs" / "squeeze_span" / f"seed{seed}")  # else it resumes at its end

    outcome = run_sweep(plan, device="cpu", progress=False, time_limit=3600)
    assert outcome.deferred == ["squeeze_span seed 1", "squeeze_span seed 2"] and outcome.done == []
    printed = capsys.readouterr().out
    assert "squeeze_span seed 1: left for a later sweep (it needs about 1667 min, 60 min" in printed
    # both runs are still left when the sweep reaches the second: the deferred first one counts too
    assert "[1/2] squeeze_span seed 1 (train); about 3333 min of runs left in the plan" in printed
    assert "[2/2] squeeze_span seed 2 (train); about 3333 min of runs left in the plan" in printed
    assert not (tmp_path / "results" / "squeeze_span" / "seed1.json").exists()

    assert main(["sweep", str(plan), "--no-progress", "--time-limit", "600000"]) in (0, None)
    assert (tmp_path / "results" / "squeeze_span" / "seed1.json").is_file()
    assert main(["sweep", str(plan), "--time-limit", "0"]) == 2
    assert "argument --time-limit: 0 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize("slow", [True, False], ids=["gpu_without_bf16", "cpu_without_bf16"])
def test_a_time_limited_sweep_leaves_a_bf16_run_to_a_machine_that_computes_bf16(
    slow, learnable_fashion_mnist, tiny_teacher, tmp_path, capsys, monkeypatch
):
    """With no pace of its own here, a bf16 run on a GPU that emulates bf16 would take several times
    what its plan expects: a sweep on a clock leaves it, and runs the fp32 one beside it. A CPU without
    bf16 hardware trains it at about fp32's pace (Bf16ProductsInFp32Kernels), and the sweep runs both."""
    from squeeze_span import runtime
    from squeeze_span.experiments import sweep

    monkeypatch.setattr(runtime, "_cpu_native_bf16", lambda: False)
    if slow:  # what slow_bf16 says of a GPU before Ampere; this test's sweep still runs on the CPU
        monkeypatch.setattr(sweep, "slow_bf16", lambda device: True)
    entries = yaml.safe_load(write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher).read_text())["entries"]
    entries[0].update(seeds=[0], overrides=["train.precision=bf16"], fd=False, discrepancy=False)
    entries.append({**entries[0], "name": "in_fp32", "overrides": ["train.precision=fp32"]})
    plan = write_plan(tmp_path, learnable_fashion_mnist, tiny_teacher, entries=entries)

    outcome = run_sweep(plan, device="cpu", progress=False, time_limit=3600, only=["squeeze_span", "in_fp32"])
    if slow:
        assert outcome.deferred == ["squeeze_span seed 0"] and outcome.done == ["in_fp32 seed 0"]
        assert "squeeze_span seed 0: left for a later sweep (it trains in bf16, which this GPU emulates" in (
            capsys.readouterr().out
        )
    else:
        assert outcome.deferred == [] and outcome.done == ["squeeze_span seed 0", "in_fp32 seed 0"]


def test_bf16_is_slow_only_on_a_gpu_without_it(monkeypatch):
    from squeeze_span import runtime

    for native in (False, True):
        monkeypatch.setattr(runtime, "_cpu_native_bf16", lambda native=native: native)
        assert not runtime.slow_bf16(torch.device("cpu"))
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, native=native: native)
        assert runtime.slow_bf16(torch.device("cuda")) is not native
