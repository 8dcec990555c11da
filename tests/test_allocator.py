import platform
import subprocess
import sys

import pytest

from squeeze_span import allocator

# Allocates 64 MiB through malloc and prints the bytes glibc serves by mmap (mallinfo2's hblkhd),
# for it, after keep_freed_memory() when asked: what a torch tensor of that size gets.
PROBE = """
import ctypes, sys
from squeeze_span.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    print(keep_freed_memory(), file=sys.stderr)
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
print(libc.mallinfo2().hblkhd - before)
"""


def mmapped_bytes(mode: str, **env: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env={"PATH": "", **env}
    )
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator is tuned on glibc only")
def test_kept_memory_serves_a_large_tensor_from_the_heap_not_a_fresh_mmap():
    assert mmapped_bytes("system") >= 64 << 20  # glibc's default: an mmap, unmapped again at free
    assert mmapped_bytes("tuned") == 0
    assert mmapped_bytes("tuned", SQUEEZE_SPAN_ALLOCATOR="system") >= 64 << 20
    assert mmapped_bytes("tuned", MALLOC_TOP_PAD_="0") >= 64 << 20  # the user's own glibc settings win


def test_the_user_can_keep_the_system_allocator(monkeypatch):
    monkeypatch.setenv("SQUEEZE_SPAN_ALLOCATOR", "system")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *args: pytest.fail("mallopt was called"))
    assert allocator.keep_freed_memory() == "system (SQUEEZE_SPAN_ALLOCATOR=system)"
    assert allocator.state() == "system (SQUEEZE_SPAN_ALLOCATOR=system)"
