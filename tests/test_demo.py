import json

import pytest

from squeeze_span.demo import DemoSettings, run_demo, summary


def test_the_demo_runs_end_to_end_at_smoke_size(learnable_fashion_mnist, tiny_teacher, tmp_path):
    settings = DemoSettings(
        minutes=0.02,
        output_dir=str(tmp_path / "demo"),
        data_root=str(learnable_fashion_mnist),
        teacher=str(tiny_teacher),
        smoke=True,
        progress=False,
    )
    results = run_demo(settings)
    assert set(results) == {"squeeze_span", "vicreg_real", "random_init", "split", "machine"}
    assert results["split"] == "test"
    for name in ("squeeze_span", "vicreg_real"):
        assert results[name]["steps"] >= 1 and 0 <= results[name]["top1"] <= 100
        assert results[name]["seconds"] < 60
    assert results["random_init"]["top1"] > 90  # the learnable set separates even without training
    text = summary(results)
    assert "squeeze and span" in text and "VICReg (real images)" in text and "At equal training time" in text
    for name in ("squeeze_span", "vicreg_real"):  # each schedule ended with its 1.2 s budget
        last = json.loads((tmp_path / "demo" / name / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["step"] == results[name]["steps"] and last["seconds"] >= 1.2 and last["lr"] == 0.0


def test_the_summary_calls_a_gap_within_seed_noise_a_match():
    results = {
        "squeeze_span": {"top1": 86.18, "steps": 776, "seconds": 413.9},
        "vicreg_real": {"top1": 86.40, "steps": 878, "seconds": 407.6},
        "random_init": {"top1": 78.36, "steps": 0, "seconds": 0.0},
    }
    line = summary(results).splitlines()[-1]
    assert "matches VICReg on real images within seed noise (0.22 points behind" in line
    assert "beats the untrained backbone by 7.82 points" in line
    results["vicreg_real"]["top1"] = 87.40
    assert "trails VICReg on real images by 1.22 points" in summary(results)


def test_a_tuning_demo_with_a_teacher_pool_probes_the_validation_split(learnable_fashion_mnist, tiny_teacher, tmp_path):
    for test_file in learnable_fashion_mnist.glob("t10k-*"):
        test_file.unlink()  # tuning must not need the test split
    settings = DemoSettings(
        minutes=0.02,
        output_dir=str(tmp_path / "demo"),
        data_root=str(learnable_fashion_mnist),
        teacher=str(tiny_teacher),
        split="validation",
        overrides=("teacher.pool_size=40",),
        smoke=True,
        progress=False,
    )
    results = run_demo(settings)
    assert results["split"] == "validation" and results["squeeze_span"]["steps"] >= 1
    config = (tmp_path / "demo" / "squeeze_span" / "config.yaml").read_text()
    assert "pool_size: 40" in config


def test_a_bad_override_is_refused_before_the_previous_demo_is_removed(tmp_path):
    from squeeze_span.errors import ConfigError

    previous = tmp_path / "demo" / "squeeze_span" / "metrics.jsonl"
    previous.parent.mkdir(parents=True)
    previous.write_text("{}\n")
    settings = DemoSettings(output_dir=str(tmp_path / "demo"), overrides=("optimizer.base_lr=-1",), progress=False)
    with pytest.raises(ConfigError, match="optimizer.base_lr=-1"):
        run_demo(settings)
    assert previous.exists()
