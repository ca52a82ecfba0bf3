"""The process heap: keep freed blocks of up to 32 MiB for reuse instead of handing them back.

Why: torch allocates each update's large temporaries afresh: the bfloat16 cast of the
512x3136 weight (3.2 MB), the float32 cast of its gradient (6.4 MB), the minibatch's float
images (3.6 MB). glibc serves a block above its mmap threshold (dynamic, from 128 KiB) with
its own mmap and unmaps it on free, and gives the heap's top back past its trim threshold,
so the next tensor of that size lands on fresh pages and faults them in one by one. On the
2-core AMD EPYC VM of docs/speed.md the gradient's cast took 2.3-2.6 ms inside the backward
this way, 0.27 ms on reused memory (both measured in the update's backward); the update alone
went from 18.2-21.2 ms to 17.4 ms, and the four-game trainer's page faults fell 3.4x.

Method: ``mallopt(M_MMAP_THRESHOLD, 32 MiB)`` (blocks below it come from the heap, where a
freed block is reused; a fixed value also ends glibc's dynamic threshold; 32 MiB is its 64-bit
maximum), ``mallopt(M_TRIM_THRESHOLD, 2 GiB - 1)`` (mallopt's int maximum: the heap is not shrunk
until that much is free at its top) and ``mallopt(M_TOP_PAD, 64 MiB)`` (it grows in large steps).
The replay's arrays, far larger, are still mapped on their own.
Cost: the process keeps the heap of its peak (its peak memory is unchanged).
Domain: glibc (Linux). Elsewhere, or when the user has set any of these (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_ARENA_MAX``, or ``glibc.malloc`` tunables in
``GLIBC_TUNABLES``), nothing is changed and the returned line says why. The settings hold for the
whole process from the call on (``amn train-student``, ``amn study``, a test calling ``train``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# glibc's malloc.h
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = (("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD, 32 << 20), ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, 2**31 - 1),
            ("M_TOP_PAD", M_TOP_PAD, 64 << 20))
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")


def _libc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> str:
    """Set the heap as the module docstring says; one line for the run's log saying what was done."""
    user = [v for v in USER_VARIABLES if v in os.environ]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        user.append("GLIBC_TUNABLES")
    if user:
        return f"heap: glibc's malloc left as set by {', '.join(user)}"
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return f"heap: left to the system allocator (not glibc: {platform.system()} {platform.libc_ver()[0] or '?'})"
    failed = [name for name, param, value in SETTINGS if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1]
    if failed:
        return f"heap: glibc refused mallopt({', '.join(failed)}); freed blocks may be unmapped"
    return "heap: freed blocks up to 32 MiB kept for reuse (glibc mallopt)"
