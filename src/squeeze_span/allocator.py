"""The C allocator under torch: kept from handing freed tensors back to the kernel (no torch import here,
so that the CLI can call it first, at no cost to ``--help``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ALLOCATOR_ENV = "SQUEEZE_SPAN_ALLOCATOR"  # "system": leave the C allocator as the process started with it
_GLIBC_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # glibc's mallopt parameters (malloc.h)
_state = "system (not tuned)"


def keep_freed_memory() -> str:
    """Have glibc's malloc keep the memory torch frees for its next tensors; say what was done.

    glibc serves a large block (above a threshold that rises to 32 MiB at most) by mmap and
    hands it back to the kernel at free, so a step that allocates the same activations as
    the last one page-faults all of them in again, zeroed. With mmap off and a 1 GiB trim
    threshold the freed blocks stay in the heap: a VICReg step runs 1.11x faster, a squeeze
    and span step 1.04x (benchmarks/RESULTS.md), and the demo's peak memory stays the same.
    The CLI calls this first. It leaves malloc alone where the user set glibc's own
    ``MALLOC_*`` variables, where ``SQUEEZE_SPAN_ALLOCATOR=system``, and off glibc.
    """
    global _state
    if os.environ.get(ALLOCATOR_ENV, "").lower() == "system":
        _state = f"system ({ALLOCATOR_ENV}=system)"
    elif any(name in os.environ for name in _GLIBC_MALLOC_ENV):
        _state = "system (the MALLOC_* variables set)"
    elif platform.libc_ver()[0] != "glibc":
        _state = "system (not glibc)"
    else:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
        tuned = all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
        _state = "glibc, freed memory kept (no mmap, 1 GiB trim threshold)" if tuned else "system (mallopt refused)"
    return _state


def state() -> str:
    """What :func:`keep_freed_memory` did in this process, for results files."""
    return _state
