import contextlib
import os
from pathlib import Path

import pytest
import torch

from squeeze_span.cli import main
from squeeze_span.errors import ConfigError
from squeeze_span.models import build_backbone
from squeeze_span.runtime import autocast, conv_memory_format, full_precision, resolve_device, resolve_precision


def pretend_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_and_cpu_resolve_on_any_machine(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    pretend_gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    assert not torch.backends.cudnn.benchmark
    pretend_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda", 1)
    assert torch.backends.cudnn.benchmark  # a GPU's loops repeat their shapes: cuDNN picks its fastest kernels


@pytest.mark.parametrize(
    ("device", "gpus", "message"),
    [
        ("tpu", 0, "device 'tpu' is unknown; use auto, cpu, cuda, cuda:N or mps"),
        ("meta", 0, "device 'meta' is unknown; use auto, cpu, cuda, cuda:N or mps"),
        ("cuda:x", 0, "device 'cuda:x' is unknown; use auto, cpu, cuda, cuda:N or mps"),
        ("cuda", 0, "device 'cuda' needs a CUDA GPU, and torch sees none; use device=cpu or auto"),
        ("cuda:0", 0, "device 'cuda:0' needs a CUDA GPU, and torch sees none; use device=cpu or auto"),
        ("cuda:2", 2, "device 'cuda:2' names GPU 2, but torch sees 2; use device=cuda:0 to cuda:1, cpu or auto"),
    ],
)
def test_a_device_this_machine_lacks_is_a_config_error(device, gpus, message, monkeypatch):
    pretend_gpus(monkeypatch, gpus)
    with pytest.raises(ConfigError) as error:
        resolve_device(device)
    assert str(error.value) == message


def test_mps_where_absent_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="^device 'mps' needs Apple's MPS, which this machine lacks; use device=cpu"):
        resolve_device("mps")


def test_train_on_cuda_without_a_gpu_is_one_line_and_status_2(monkeypatch, tmp_path, capsys):
    pretend_gpus(monkeypatch, 0)
    args = ["configs/fashion_mnist/squeeze_span.yaml", "train.device=cuda", f"output_dir={tmp_path / 'run'}"]
    assert main(["train", *args]) == 2
    assert capsys.readouterr().err == (
        "ConfigError: device 'cuda' needs a CUDA GPU, and torch sees none; use device=cpu or auto\n"
    )


def test_probe_on_a_gpu_beyond_the_count_is_one_line_and_status_2(monkeypatch, capsys):
    pretend_gpus(monkeypatch, 1)
    assert main(["probe", "--random-init", "resnet18_cifar", "--dataset", "fashion_mnist", "--device", "cuda:3"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("ConfigError: device 'cuda:3' names GPU 3, but torch sees 1")


# -- precision ---------------------------------------------------------------------------------------


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend this CPU has bf16 hardware, or has none: ``cpu_bf16(True)``."""
    from squeeze_span import runtime

    def pretend(native: bool) -> None:
        monkeypatch.setattr(runtime, "_cpu_native_bf16", lambda: native)
        runtime._warn_emulated_bf16.cache_clear()

    yield pretend
    runtime._warn_emulated_bf16.cache_clear()


@pytest.mark.parametrize(("native", "auto"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(native, auto, cpu_bf16):
    cpu_bf16(native)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == auto
    assert [resolve_precision(name, cpu) for name in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with autocast(cpu, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if native else torch.float32)


def test_an_unknown_precision_is_a_config_error_that_names_the_choices():
    with pytest.raises(ConfigError, match=r"^precision='bf32' is unknown; use one of auto, fp32, bf16, fp16$"):
        resolve_precision("bf32", torch.device("cpu"))


def test_bf16_by_name_where_it_is_emulated_runs_after_one_warning(cpu_bf16, capsys):
    cpu_bf16(False)
    for _ in range(3):  # autocast is entered at every step: the warning comes once
        with autocast(torch.device("cpu"), "bf16"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: precision=bf16 on this CPU, which has no bf16 hardware")
    assert err.rstrip().endswith("precision=auto picks fp32 here")
    cpu_bf16(True)
    with autocast(torch.device("cpu"), "bf16"):
        pass
    assert capsys.readouterr().err == ""


def test_bf16_where_the_cpu_lacks_it_computes_products_in_fp32_kernels(cpu_bf16):
    from torch.overrides import _get_current_function_mode_stack

    from squeeze_span.runtime import Bf16ProductsInFp32Kernels

    for native in (False, True):
        cpu_bf16(native)
        context = autocast(torch.device("cpu"), "bf16")  # made, as the bench does to check the setting
        assert not torch.is_autocast_enabled("cpu") and not _get_current_function_mode_stack()
        with context:
            modes = [type(mode) for mode in _get_current_function_mode_stack()]
            assert (Bf16ProductsInFp32Kernels in modes) is not native
        assert not torch.is_autocast_enabled("cpu") and not _get_current_function_mode_stack()


def bf16_products(op, *operands, emulate: bool):
    """``op`` on ``operands`` under bf16 autocast, by the bf16 kernel or by Bf16ProductsInFp32Kernels."""
    from squeeze_span.runtime import Bf16ProductsInFp32Kernels

    with torch.autocast("cpu", dtype=torch.bfloat16):
        with Bf16ProductsInFp32Kernels() if emulate else contextlib.nullcontext():
            return op(*operands)


@pytest.mark.parametrize(
    "op", [torch.nn.functional.conv2d, torch.nn.functional.linear, torch.matmul, torch.Tensor.__matmul__]
)
@pytest.mark.parametrize("emulate", [True, False], ids=["emulated", "bf16_kernel"])
def test_bf16_products_round_where_a_bf16_kernel_does(op, emulate):
    """A bf16 kernel's result, and each operand's gradient, is the exact sum of bf16-rounded products,
    rounded to bf16 (up to the order of its fp32 sums). The emulation's are too; the exact sums of the
    unrounded operands, which a mode that forgot to round them would give, are not. Of torch's own
    kernels only the forward result is checked: on a CPU without bf16 hardware its convolution's
    backward sums partly in bf16 (2.5-6x the once-rounded error on an AVX2 EPYC)."""
    generator = torch.Generator().manual_seed(0)
    if op is torch.nn.functional.conv2d:
        shapes = (4, 16, 8, 8), (8, 16, 3, 3)
    else:
        shapes = (32, 144), ((24, 144) if op is torch.nn.functional.linear else (144, 24))
    a, b = (torch.randn(shape, generator=generator, requires_grad=True) for shape in shapes)
    result = bf16_products(op, a, b, emulate=emulate)
    assert result.dtype == torch.bfloat16
    upstream = torch.randn(result.shape, generator=generator).to(torch.bfloat16)
    found = (result, *torch.autograd.grad(result, (a, b), upstream))

    def exact(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        x, y = x.detach().double().requires_grad_(), y.detach().double().requires_grad_()
        out = op(x, y)
        return [t.to(torch.bfloat16) for t in (out, *torch.autograd.grad(out, (x, y), upstream.double()))]

    checked = found if emulate else found[:1]

    def agreement(reference: list[torch.Tensor]) -> list[float]:
        return [(r == f.to(torch.bfloat16)).double().mean().item() for r, f in zip(reference, checked, strict=False)]

    rounded = [t.detach().to(torch.bfloat16) for t in (a, b)]
    assert min(agreement(exact(*rounded))) > 0.98  # the fp32 sums may tip a near-tie either way
    assert max(agreement(exact(a, b))) < 0.9


def test_bf16_products_in_fp32_kernels_follow_the_bf16_kernels_through_a_network():
    """Through a small ResNet, the emulation's features stay far closer to bf16 autocast's own kernels'
    than fp32's do, and its weights' gradients come out bf16-rounded as theirs do."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet18_cifar", in_channels=1, width=8)
    views = torch.randn(16, 1, 32, 32)

    def features_and_gradients(precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        backbone.zero_grad()
        if precision == "fp32":
            features = backbone(views)
        else:
            features = bf16_products(backbone, views, emulate=precision == "emulated")
        features.float().square().mean().backward()
        weights = [m.weight.grad.flatten() for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
        return features.float().detach(), torch.cat(weights)

    found = {precision: features_and_gradients(precision) for precision in ("bf16", "emulated", "fp32")}

    def distance(precision: str) -> float:
        kernel = found["bf16"][0]
        return ((found[precision][0] - kernel).norm() / kernel.norm()).item()

    assert distance("emulated") < 0.5 * distance("fp32")
    for precision, bf16_gradients in (("bf16", True), ("emulated", True), ("fp32", False)):
        gradients = found[precision][1]
        assert torch.equal(gradients.to(torch.bfloat16).float(), gradients) is bf16_gradients, precision


def test_bf16_products_in_fp32_kernels_leave_fp32_regions_and_float64_alone():
    from squeeze_span.runtime import Bf16ProductsInFp32Kernels

    a = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    expected = a @ a
    with torch.autocast("cpu", dtype=torch.bfloat16), Bf16ProductsInFp32Kernels():
        with full_precision(torch.device("cpu")):
            product = a @ a
        assert (a.double() @ a.double()).dtype == torch.float64
    # operands rounded to bf16 would move it by about 1e-3
    assert product.dtype == torch.float32 and torch.allclose(product, expected, rtol=1e-5, atol=1e-5)


def test_the_shipped_configs_train_in_auto_precision():
    from squeeze_span.config import RunSettings
    from squeeze_span.methods import load_training_config

    assert RunSettings().precision == "auto"
    for path in sorted(Path("configs").glob("*/*.yaml")):
        if path.name != "gan.yaml":
            assert load_training_config(path, []).train.precision == "auto", path


# -- memory format -----------------------------------------------------------------------------------


def pretend_cpu(monkeypatch, machine: str, avx512: bool, onednn_cap: str | None = None) -> None:
    from squeeze_span import runtime

    monkeypatch.setattr(runtime.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: avx512)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if onednn_cap is None:  # `make test-avx2` sets a cap of its own
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_cap)


@pytest.mark.parametrize(
    ("machine", "avx512", "width", "layout"),
    [
        ("x86_64", False, 4, torch.contiguous_format),  # its shortcuts hit oneDNN's AVX2 1x1 bug
        ("x86_64", False, 7, torch.contiguous_format),
        ("x86_64", False, 8, torch.channels_last),
        ("x86_64", False, 16, torch.channels_last),
        ("x86_64", True, 4, torch.channels_last),
        ("aarch64", False, 4, torch.channels_last),
    ],
)
def test_channels_last_except_where_avx2_onednn_corrupts_narrow_shortcuts(machine, avx512, width, layout, monkeypatch):
    pretend_cpu(monkeypatch, machine, avx512)
    backbone = build_backbone("resnet18_cifar", in_channels=1, width=width)
    assert conv_memory_format(backbone, torch.device("cpu")) == layout
    assert conv_memory_format(backbone, torch.device("cuda")) == torch.channels_last


# Runs in its own process: where the layout is wrong, oneDNN corrupts the heap and the process dies.
_NARROW_STUDENT_STEP = """
import torch
from squeeze_span.models import build_backbone
from squeeze_span.runtime import conv_memory_format
torch.manual_seed(0)
backbone = build_backbone("resnet18_cifar", in_channels=1, width=4)
layout = conv_memory_format(backbone, torch.device("cpu"))
reference = build_backbone("resnet18_cifar", in_channels=1, width=4).double()
reference.load_state_dict(backbone.state_dict())
backbone = backbone.to(memory_format=layout)
for batch in (6, 12):
    views = torch.randn(batch, 1, 24, 24)
    backbone(views.contiguous(memory_format=layout)).square().mean().backward()
    reference(views.double()).square().mean().backward()
pairs = zip(backbone.parameters(), reference.parameters())
error = max((a.grad.double() - b.grad).abs().max().item() for a, b in pairs)
print(f"{error:.3g}")
"""


@pytest.mark.parametrize(
    ("cap", "layout"), [("AVX2", torch.contiguous_format), ("AVX512_CORE_AMX", torch.channels_last)]
)
def test_a_onednn_capped_at_avx2_is_treated_as_an_avx2_cpu(cap, layout, monkeypatch):
    from squeeze_span import runtime

    pretend_cpu(monkeypatch, "x86_64", avx512=True, onednn_cap=cap)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert conv_memory_format(build_backbone("resnet18_cifar", in_channels=1, width=4), torch.device("cpu")) == layout
    assert runtime._cpu_native_bf16.__wrapped__() == (layout == torch.channels_last)  # AMX, unless capped


def test_a_width_4_student_trains_in_the_layout_chosen_for_this_cpu():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _NARROW_STUDENT_STEP],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) < 1e-3  # float32 gradients against float64 ones, through BatchNorm
