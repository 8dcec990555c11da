"""Device, precision and a one-line description of the machine, shared by training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform

import torch

from squeeze_span import allocator
from squeeze_span.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: bf16 autocast runs 3-4x faster on AMX CPUs and on GPUs.

    fp16 is for GPUs only (CPUs have no fast fp16 path), and needs a GradScaler when training.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError("precision=fp16 needs a CUDA device; use precision=bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


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
