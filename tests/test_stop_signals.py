"""StopSignals: Ctrl-C and SIGTERM set a flag in the training loop, except a signal inherited as ignored.

A shell starts a background job (``amn study ... &``, ``nohup``) with SIGINT ignored; catching it
in the loop alone made Ctrl-C stop such a job mid-training but not during setup or between a
study's runs. Each test runs in a child process so that its dispositions are its own.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from amn.trainer import StopSignals
    ignored = sys.argv[1] == "ignored"
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # what a non-interactive shell's `&` does
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop = StopSignals()
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    time.sleep(0.05)  # the handler runs between bytecodes of the main thread
    stop.restore()
    after = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    print(stop.requested, after == before)
""")


def _child(disposition: str, signame: str) -> str:
    done = subprocess.run([sys.executable, "-c", CHILD, disposition, signame], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_with_its_default_handler_sets_the_flag_and_restore_puts_it_back(signame):
    assert _child("default", signame) == "True True"


def test_an_inherited_ignored_sigint_stays_ignored_and_sigterm_still_stops():
    assert _child("ignored", "SIGINT") == "False True"
    assert _child("ignored", "SIGTERM") == "True True"
