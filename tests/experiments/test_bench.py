import dataclasses
import json
import statistics

import pytest
import torch

from squeeze_span import runtime
from squeeze_span.cli import main
from squeeze_span.errors import DatasetError
from squeeze_span.experiments import bench
from squeeze_span.experiments.bench import (
    CASES,
    BenchSettings,
    bench_generator,
    interleave,
    load_bench_config,
    run_bench,
)
from squeeze_span.generators.stylegan2 import Generator

TINY = ["model.width=4", "model.proj_dim=16", "model.proj_layers=2", "method.a_hidden=16"]
RATES = [f"{name}_img_s" for name in CASES]


def test_the_json_holds_every_rate_and_the_ratios_are_their_quotients(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys
):
    out = tmp_path / "bench.json"
    args = ["--teacher", str(tiny_teacher), "--batch", "8", "--precision", "fp32", "--device", "cpu"]
    args += ["--steps", "2", "--warmup", "1", "--json", str(out), *TINY, f"data.root={learnable_fashion_mnist}"]
    assert main(["bench", *args]) == 0
    result = json.loads(out.read_text())
    assert all(result[key] > 0 for key in RATES)
    assert result["ratio_vs_vicreg"] == pytest.approx(result["step_img_s"] / result["vicreg_img_s"], rel=1e-12)
    assert result["ratio_pool_vs_vicreg"] == pytest.approx(
        result["pool_step_img_s"] / result["vicreg_img_s"], rel=1e-12
    )
    assert result["student_peak_fraction"] == pytest.approx(
        result["student_img_s"] * result["student_flop_per_image"] / result["matmul_peak_flop_s"], rel=1e-12
    )
    settings = result["settings"]
    assert (settings["batch"], settings["synthetic"], settings["real"], settings["pool_size"]) == (8, 4, 4, 4)
    assert settings["teacher_source"] == str(tiny_teacher)
    assert settings["real_images"] == "fashion_mnist train (160 images)"
    assert {name: len(values) for name, values in result["seconds_per_step"].items()} == dict.fromkeys(CASES, 2)
    # The teacher case renders B_s = 4 images a step, the others handle B = 8.
    teacher_seconds = statistics.median(result["seconds_per_step"]["teacher"])
    assert result["teacher_img_s"] == pytest.approx(4 / teacher_seconds, rel=1e-12)
    assert {"cpu", "cores", "cpu_flags", "torch", "torch_cpu_capability"} <= set(result["machine"])
    table = capsys.readouterr().out
    assert all(description in table for description in CASES.values())


def test_a_steps_flops_are_its_forward_and_both_backward_matmuls():
    layer = torch.nn.Linear(32, 16, bias=False)
    x = torch.randn(8, 32, requires_grad=True)
    # forward 2*8*32*16, backward the same twice (the input's and the weight's gradients)
    assert bench.step_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 8 * 32 * 16


def test_without_the_dataset_random_images_of_its_shape_stand_in(tiny_teacher, monkeypatch):
    def missing(name, root, split):
        raise DatasetError(f"{name} is not here")

    monkeypatch.setattr(bench, "load_dataset", missing)
    settings = BenchSettings(
        str(tiny_teacher), batch=8, precision="fp32", device="cpu", steps=1, warmup=0, overrides=tuple(TINY)
    )
    result = run_bench(settings)
    assert result["settings"]["real_images"].startswith("synthetic uint8 1x28x28 (")
    assert all(result[key] > 0 for key in RATES)
    dataset, _ = bench.real_images(load_bench_config(settings), count=12)
    assert (dataset.images.shape, dataset.images.dtype.name) == ((12, 1, 28, 28), "uint8")


def test_a_dataset_folder_the_user_names_must_hold_the_images(tmp_path):
    config = load_bench_config(BenchSettings(overrides=(f"data.root={tmp_path / 'none'}",)))
    with pytest.raises(DatasetError):
        bench.real_images(config, count=8)


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["--teacher", "no/such/generator"], "CheckpointError: no/such/generator does not exist;"),
        (["--teacher", "asset:nothing"], "CheckpointError: asset:nothing is not shipped with this install"),
        (["--precision", "fp16", "--device", "cpu"], "ConfigError: precision=fp16 needs a CUDA device;"),
        (
            ["method.syn_ratio=0.0"],
            "ConfigError: method.syn_ratio=0.0 leaves no generated image in a batch of 8; raise it or --batch",
        ),
        (["--steps", "0"], "UsageError: squeeze-span bench: argument --steps:"),
    ],
)
def test_a_mistake_is_one_line_and_status_2(args, start, tiny_teacher, capsys):
    teacher = [] if "--teacher" in args else ["--teacher", str(tiny_teacher)]
    assert main(["bench", "--device", "cpu", "--batch", "8", *teacher, *args, *TINY]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(start), error


def test_the_cases_take_turns_and_each_is_timed_as_often():
    calls: list[str] = []
    cases = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    ticks = iter(range(1000))
    synchronized = []
    synchronize, clock = (lambda: synchronized.append(1)), (lambda: next(ticks))
    seconds = interleave(cases, steps=3, warmup=2, synchronize=synchronize, clock=clock)
    assert [calls.count(name) for name in "abc"] == [5, 5, 5]
    rounds = [calls[i : i + 3] for i in range(0, 15, 3)]
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc"), list("bca")]
    assert seconds == {"a": [1, 1, 1], "b": [1, 1, 1], "c": [1, 1, 1]}  # two clock reads around each call
    assert len(synchronized) == 2 * 15


def test_cifar10_config_is_the_papers_generator_with_random_weights():
    torch.manual_seed(0)
    generator, source = bench_generator("cifar10-config")
    assert isinstance(generator, Generator)
    assert (generator.z_dim, generator.w_dim, generator.img_resolution, generator.img_channels) == (512, 512, 32, 3)
    assert generator.synthesis.b32.conv1.weight.shape == (512, 512, 3, 3)
    assert len([name for name, _ in generator.mapping.named_children() if name.startswith("fc")]) == 2
    assert source.startswith("random StyleGAN2 of the paper's CIFAR-10 config")


def test_the_machine_flags_name_amx_and_avx512_bf16(monkeypatch):
    flags = "fpu sse4_2 avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8"
    monkeypatch.setattr(runtime, "_cpuinfo", lambda field: flags if field == "flags" else "Xeon")
    assert runtime.cpu_flags() == ["amx_bf16", "amx_int8", "amx_tile", "avx2", "avx512_bf16", "avx512f"]
    assert runtime.machine_info()["cpu_flags"] == runtime.cpu_flags()


@pytest.mark.parametrize(("emulated", "peak"), [(True, "fp32"), (False, "bf16")])
def test_the_peak_is_the_faster_matmul_and_auto_is_recorded_as_what_it_chose(emulated, peak, tiny_teacher, monkeypatch):
    """Where bf16 is emulated its matmul is far below the student's step (which a share of over 100%
    showed), so the machine's peak is fp32's there; 'auto' is named by the precision it ran."""
    rates = {"fp32": 100e9, "bf16": 1e9 if emulated else 300e9}
    monkeypatch.setattr(bench, "matmul_peak", lambda device, precision: rates[precision])
    monkeypatch.setattr(runtime, "_cpu_native_bf16", lambda: not emulated)
    settings = BenchSettings(
        str(tiny_teacher), batch=8, precision="auto", device="cpu", steps=1, warmup=0, overrides=tuple(TINY)
    )
    result = run_bench(settings)
    assert result["settings"]["precision"] == ("fp32" if emulated else "bf16")
    result = run_bench(dataclasses.replace(settings, precision="bf16"))
    assert (result["matmul_peak_precision"], result["matmul_peak_flop_s"]) == (peak, rates[peak])
    assert f"of the machine's matmul peak ({rates[peak] / 1e9:.0f} GFLOP/s, 2048-cube, {peak})" in bench.format_table(
        result
    )
