"""How the trainer's threads share the cores (``overlap_update``).

Two threads do the work: the update thread (the student's forward, backward and Adam step,
the loop's serial bottleneck) and the main thread (acting, expert labelling, replay), beside
the emulators' C++ threads (one per game, created by the main thread). Left to the OS, the
emulator threads and the main thread preempt the update whenever they wake.

``pin_threads`` gives the update thread a core of its own and the rest to everything else:
the update thread is pinned to the first core this process may use, the main thread (and so
the emulator threads it creates afterwards, which inherit its affinity) to the others. On the
2-core AMD EPYC (AVX-512-BF16) measured for docs/speed.md, the four-game default went from
637–648 to 688–741 agent steps/s (``scripts/bench_trainer.py``, alternated runs). It applies
only on Linux, to a single-process run with at least two usable cores: under torchrun several
processes share a machine, and pinning each one's update thread to the same core would
serialise them. The main thread's affinity is put back when training ends.
"""

from __future__ import annotations

import os

import torch


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity mask), sorted; [] where the OS has no such call."""
    getter = getattr(os, "sched_getaffinity", None)
    return sorted(getter(0)) if getter is not None else []


class CorePlan:
    """Which cores the update thread and the main thread take; ``enabled`` False leaves the OS to it."""

    def __init__(self, enabled: bool):
        cores = usable_cores()
        self.enabled = enabled and len(cores) >= 2 and hasattr(os, "sched_setaffinity")
        self.update_cores = set(cores[:1])
        self.main_cores = set(cores[1:])
        self._previous = set(cores)

    def pin_main(self) -> None:
        """Call on the main thread before the environments are created (their threads inherit it)."""
        if self.enabled:
            os.sched_setaffinity(0, self.main_cores)  # pid 0: the calling thread only

    def restore_main(self) -> None:
        if self.enabled:
            os.sched_setaffinity(0, self._previous)

    def update_thread_initializer(self, torch_threads: int):
        """The update thread's initializer: its core, and ``torch_threads`` like the main thread.

        ``torch.set_num_threads`` acts on the calling thread's OpenMP pool, and torch sets a new
        thread's count from the process-wide one at that thread's first op, which would undo an
        earlier set here: touch it first (``get_num_threads``), then set."""
        def initialise() -> None:
            if self.enabled:
                os.sched_setaffinity(0, self.update_cores)
            if torch_threads > 0:
                torch.get_num_threads()
                torch.set_num_threads(torch_threads)

        return initialise
