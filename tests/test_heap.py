"""amn.heap: with glibc, a freed multi-MB tensor's block stays in the heap for the next one."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from amn.heap import USER_VARIABLES, keep_freed_memory

# In a fresh process (glibc's thresholds start at 128 KiB), a 16 MiB tensor is its own mapping
# (mallinfo2's hblkhd) and leaves the heap when freed; after keep_freed_memory it comes from the
# heap (arena) and its block is still there, free (fordblks), after it is freed.
PROBE = r"""
import ctypes, json, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
line = None
if sys.argv[1] == "keep":
    from amn.heap import USER_VARIABLES, keep_freed_memory
    line = keep_freed_memory()
import torch
info = lambda: {k: getattr(libc.mallinfo2(), k) for k in ("arena", "hblkhd", "fordblks")}
before = info()
x = torch.ones(4 << 20)  # 16 MiB of float32
live = info()
del x
freed = info()
print(json.dumps({"line": line, "before": before, "live": live, "freed": freed}))
"""

MiB = 1 << 20
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap settings are glibc's (Linux)")


def has_mallinfo2() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


def probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
@pytest.mark.skipif(not has_mallinfo2(), reason="mallinfo2 needs glibc 2.33 or newer")
def test_a_freed_block_stays_in_the_heap_for_reuse():
    default, kept = probe("default"), probe("keep")
    # glibc's default: its own mapping, returned on free (the next tensor faults in fresh pages)
    assert default["live"]["hblkhd"] - default["before"]["hblkhd"] >= 16 * MiB
    assert default["freed"]["hblkhd"] == default["before"]["hblkhd"]
    assert default["freed"]["fordblks"] < 16 * MiB
    # kept: from the heap, and still there once freed
    assert kept["line"] == "heap: freed blocks up to 32 MiB kept for reuse (glibc mallopt)"
    assert kept["live"]["hblkhd"] == kept["before"]["hblkhd"]
    assert kept["live"]["arena"] - kept["before"]["arena"] >= 16 * MiB
    assert kept["freed"]["fordblks"] >= 16 * MiB


def clear_malloc_variables(monkeypatch) -> None:
    for name in (*USER_VARIABLES, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)


def test_user_settings_are_left_alone(monkeypatch):
    clear_malloc_variables(monkeypatch)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() == "heap: glibc's malloc left as set by MALLOC_ARENA_MAX"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1048576")
    assert keep_freed_memory() == "heap: glibc's malloc left as set by GLIBC_TUNABLES"


def test_without_glibc_nothing_is_changed(monkeypatch):
    clear_malloc_variables(monkeypatch)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert keep_freed_memory().startswith("heap: left to the system allocator (not glibc")
