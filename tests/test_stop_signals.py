"""Ctrl-C (SIGINT) stops amn wherever it is, also in a job that inherited SIGINT ignored.

A non-interactive shell starts a background job (``amn study ... &``) with SIGINT ignored; training
catches SIGINT on its own (amn.trainer.StopSignals), so before amn took it back such a job stopped
in training but not during setup or between a study's runs. Each case runs in a child process so
that its signal dispositions are its own.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from amn.cli import main
    from amn.trainer import StopSignals
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # what a non-interactive shell's `&` does
    code = main(["study", "no-such-study.yaml"])    # a one-line usage error, after main's start
    print(code, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    stop = StopSignals()                             # in training: a flag, no exception
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)
    stop.restore()
    print(stop.requested, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    try:                                             # between runs: KeyboardInterrupt, as at a terminal
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
""")


def test_amn_takes_back_an_inherited_ignored_sigint_so_ctrl_c_stops_it_everywhere():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["2 True", "True True", "interrupted"]
    assert "no-such-study.yaml" in done.stderr
