import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

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
    assert text.splitlines()[-1].startswith("What to expect: at runs this short")
    for name in ("squeeze_span", "vicreg_real"):  # each schedule ended with its 1.2 s budget
        last = json.loads((tmp_path / "demo" / name / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["step"] == results[name]["steps"] and last["seconds"] >= 1.2 and last["lr"] == 0.0


def test_the_summary_calls_a_gap_within_seed_noise_a_match():
    results = {
        "squeeze_span": {"top1": 86.18, "steps": 776, "seconds": 413.9},
        "vicreg_real": {"top1": 86.40, "steps": 878, "seconds": 407.6},
        "random_init": {"top1": 78.36, "steps": 0, "seconds": 0.0},
    }
    line = summary(results).splitlines()[-2]  # the last says what to expect
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


ROOT = Path(__file__).resolve().parents[1]
SMOKE_DEMO = """
import json, sys
import squeeze_span
from squeeze_span.demo import DemoSettings, run_demo
settings = DemoSettings(minutes=0.02, output_dir="demo", data_root=sys.argv[1], smoke=True, progress=False)
print(json.dumps({"package": squeeze_span.__file__, "results": run_demo(settings)}))
"""


@pytest.mark.slow
def test_the_demo_runs_from_an_installed_wheel(learnable_fashion_mnist, tmp_path):
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside its sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source]
    subprocess.run(build, check=True)
    (wheel,) = wheels.glob("squeeze_span-*.whl")
    package = ROOT / "src" / "squeeze_span"
    shipped = {
        f"squeeze_span/{path.relative_to(package)}"
        for folder in ("assets", "configs")
        for path in (package / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "squeeze_span/configs/fashion_mnist/squeeze_span.yaml" in shipped
    assert shipped <= set(zipfile.ZipFile(wheel).namelist())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    python = venv / "bin" / "python"
    # This interpreter's packages (torch, ...), but not its squeeze_span: a plain path entry runs no .pth
    # file in it, so an editable install of the checkout stays out.
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    output = subprocess.run(
        [python, "-c", SMOKE_DEMO, learnable_fashion_mnist],
        cwd=elsewhere,
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    demo = json.loads(output.splitlines()[-1])
    assert Path(demo["package"]).is_relative_to(site)
    assert demo["results"]["squeeze_span"]["steps"] >= 1 and demo["results"]["random_init"]["top1"] > 90
    assert (elsewhere / "demo" / "squeeze_span" / "config.yaml").exists()
