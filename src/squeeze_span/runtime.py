"""Device, precision and a one-line description of the machine, shared by training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import platform
import sys
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from squeeze_span import allocator
from squeeze_span.errors import ConfigError

# 'auto' is bf16 where the device computes it in hardware, fp32 elsewhere: see resolve_precision.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device that ``device`` names: 'auto' picks the first CUDA GPU when one is visible, else the CPU.

    Every device setting (train.device, --device, each rank's GPU) comes through here, so
    a device this machine lacks stops with one line, not deep in the first tensor's move. A
    CUDA device also turns on cuDNN's autotuner: every loop here repeats the same shapes, so the
    fastest convolution algorithm, timed once per shape, pays for itself within a few steps.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in DEVICE_TYPES:
        raise ConfigError(f"device {device!r} is unknown; use auto, cpu, cuda, cuda:N or mps")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} needs a CUDA GPU, and torch sees none; use device=cpu or auto")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(
                f"device {device!r} names GPU {resolved.index}, but torch sees {count}; "
                f"use device=cuda:0 to cuda:{count - 1}, cpu or auto"
            )
        torch.backends.cudnn.benchmark = True
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} needs Apple's MPS, which this machine lacks; use device=cpu or auto")
    return resolved


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matmuls and convolutions in hardware: CUDA GPUs from Ampere on,
    x86 CPUs with AVX512-BF16 or AMX, Arm CPUs with the BF16 extension. On the others (AVX2-only x86
    CPUs, most laptops) bf16 autocast is emulated: 8-14x slower than fp32 for the student's step on an
    AVX2 AMD EPYC (benchmarks/precision.py)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and _cpu_native_bf16()


def slow_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs several times slower than fp32 on ``device``: on a GPU without bf16
    hardware. A CPU without it runs bf16 at about fp32's pace (:class:`Bf16ProductsInFp32Kernels`)."""
    return device.type == "cuda" and not native_bf16(device)


@functools.cache  # the CPU does not change while a process runs; autocast asks at every step
def _cpu_native_bf16() -> bool:
    if _x86():
        has = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        cap = _onednn_isa_cap()
        return has and (cap in ("ALL", "DEFAULT") or "BF16" in cap or "AMX" in cap or cap.startswith("AVX10"))
    return "bf16" in (_cpuinfo("Features") or "").split()  # Linux on Arm names its extensions here


def _x86() -> bool:
    return platform.machine() in ("x86_64", "AMD64", "i686")


def _onednn_isa_cap() -> str:
    """oneDNN's instruction-set cap (ONEDNN_MAX_CPU_ISA; `make test-avx2` sets AVX2): its kernels use
    nothing newer than it names, whatever the CPU has. ALL where none is set."""
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()


def _onednn_avx512() -> bool:
    """Whether oneDNN runs its AVX512 kernels here (the CPU has them, and no cap below them is set)."""
    cap = _onednn_isa_cap()
    capped = cap == "AVX" or cap.startswith(("SSE", "AVX2"))
    return torch.cpu._is_avx512_supported() and not capped


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision that ``precision`` means on ``device``: 'auto' is bf16 where the device computes it
    in hardware (:func:`native_bf16`), else fp32; the others are themselves."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: bf16 autocast runs 3-4x faster on AMX CPUs and on GPUs.

    fp16 is for GPUs only (CPUs have no fast fp16 path), and needs a GradScaler when training.
    bf16 asked for by name on a device without bf16 hardware runs, after one warning line; on a CPU
    its convolutions and matmuls then run in fp32 kernels (:class:`Bf16ProductsInFp32Kernels`).
    """
    resolved = resolve_precision(precision, device)
    dtype = _AUTOCAST_DTYPES[resolved]
    if dtype is None:
        return contextlib.nullcontext()
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError("precision=fp16 needs a CUDA device; use precision=bf16 on CPU")
    # 'auto' resolves to bf16 only where it is native, so this is bf16 asked for by name
    if dtype is torch.bfloat16 and device.type in ("cpu", "cuda") and not native_bf16(device):
        _warn_emulated_bf16(device.type)
        if device.type == "cpu":
            return _bf16_autocast_in_fp32_kernels()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def _bf16_autocast_in_fp32_kernels() -> Iterator[None]:
    with torch.autocast("cpu", dtype=torch.bfloat16), Bf16ProductsInFp32Kernels():
        yield


@functools.cache  # once per process and kind of device: autocast is entered at every step
def _warn_emulated_bf16(device_type: str) -> None:
    speed = (
        "its convolutions and matmuls run in fp32 kernels on bf16-rounded operands (the same numbers up to "
        "the order of the sums), at 0.85-0.9x fp32's speed"
        if device_type == "cpu"
        else "it is emulated and runs several times slower than fp32"
    )
    print(
        f"warning: precision=bf16 on this {device_type.upper()}, which has no bf16 hardware (AVX512-BF16, AMX, "
        f"Ampere or newer): {speed}; precision=auto picks fp32 here",
        file=sys.stderr,
        flush=True,
    )


# The ops that CPU autocast runs in bf16 and that a CPU without bf16 hardware computes slowly: torch
# 2.13.0's lower-precision list for CPU, less the RNN and attention kernels, which nothing here uses.
_BF16_PRODUCTS = frozenset(
    (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.linear)
    + (torch.mm, torch.bmm, torch.matmul, torch.addmm, torch.baddbmm, torch.addbmm, torch.prelu)
    + (torch.Tensor.mm, torch.Tensor.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__)
    + (torch.Tensor.__rmatmul__, torch.Tensor.addmm, torch.Tensor.baddbmm, torch.Tensor.addbmm)
)


class Bf16ProductsInFp32Kernels(torch.overrides.TorchFunctionMode):
    """bf16 autocast's convolutions and matmuls, computed by fp32 kernels, for CPUs without bf16 hardware.

    A bf16 kernel rounds its operands to bf16, multiplies them (a product of two 8-bit mantissas is
    exact in fp32), sums in fp32 and rounds the sum to bf16. This mode does the same with an fp32
    kernel: it rounds the operands to bf16 and back, runs the op with autocast off, and rounds the
    result to bf16. Autograd sees those casts, so the gradients are rounded where a bf16 kernel's
    would be (the input's gradient to bf16, the weight's to bf16 and then to fp32). Only the order of
    the fp32 sums differs, as it does between any two kernels. On an AVX2 CPU torch has no fast bf16
    convolution and falls back to a generic one, 10x slower than fp32, whose backward pass even sums
    partly in bf16 (2.5-6x the once-rounded error, tests/test_runtime.py); this mode runs the
    student's bf16 step at about fp32's pace (benchmarks/precision.py), with the rounding of the bf16
    hardware kernels (oneDNN's multiply bf16 into fp32 sums). Every other op runs under autocast as
    it would anyway. Entered together with ``torch.autocast('cpu', dtype=torch.bfloat16)`` by
    :func:`autocast`; where autocast is off (:func:`full_precision`), it does nothing.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            func in _BF16_PRODUCTS
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
        ):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            # autocast leaves an op with a float64 or integer operand as it is, and so does this mode
            if tensors and all(t.dtype in (torch.float32, torch.bfloat16) for t in tensors):
                with torch.autocast("cpu", enabled=False):
                    out = func(*map(_bf16_rounded, args), **{k: _bf16_rounded(v) for k, v in kwargs.items()})
                return out.to(torch.bfloat16)
        return func(*args, **kwargs)


def _bf16_rounded(value: object) -> object:
    """A float tensor rounded to bf16 and held in fp32; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float32, torch.bfloat16):
        return value.to(torch.bfloat16).float()
    return value


def conv_memory_format(network: torch.nn.Module, device: torch.device) -> torch.memory_format:
    """The layout ``network`` trains in on ``device``: channels_last, the faster one for its convolutions
    (1.1x in fp32 for the default student on an AVX2 CPU, benchmarks/precision.py), except where it is
    unsafe. On x86 CPUs without AVX512 (or with oneDNN capped below it), oneDNN's channels_last weight
    gradient of a strided 1x1 convolution with 2 or 4 to 7 input channels
    (jit_avx2_1x1_convolution_bwd_weights, torch 2.13.0) writes past its buffers: the process dies of
    heap corruption or spins for ever. A ResNet's shortcuts are such convolutions when its width is
    under 8 (the tests' and the smoke demo's 4)."""
    if device.type != "cpu" or not _x86() or _onednn_avx512():
        return torch.channels_last
    unsafe = any(
        isinstance(module, torch.nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride != (1, 1)
        and module.in_channels < 8  # 1 and 3 passed too, but a scan of a few shapes proves little
        for module in network.modules()
    )
    return torch.contiguous_format if unsafe else torch.channels_last


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Turns autocast off inside a mixed-precision region: batch statistics (variances,
    covariances) lose too much in bf16, whose 8-bit mantissa rounds 0.57 to 0.5703125."""
    return torch.autocast(device.type, enabled=False)


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in /proc/cpuinfo (None where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The matrix-relevant CPU flags (bf16 dot products, AMX), which decide how fast bf16 runs."""
    flags = (_cpuinfo("flags") or "").split()
    return sorted(flag for flag in flags if flag.startswith(("avx512_bf16", "avx512f", "amx", "avx2")))


def machine_info(device: torch.device | None = None) -> dict[str, object]:
    """What a results file records about the machine it was measured on."""
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels ATen picked: AVX2, AVX512, ...
        "torch_threads": torch.get_num_threads(),
        "allocator": allocator.state(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine_description(device: torch.device | None = None) -> str:
    """E.g. 'AMD EPYC (2 cores), torch 2.13.0+cpu', with the GPU's name when `device` is one."""
    info = machine_info(device)
    text = f"{info['cpu']} ({info['cores']} cores), torch {info['torch']}"
    return text + (f", {info['gpu']}" if "gpu" in info else "")
