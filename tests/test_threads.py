"""The update thread's core of its own (amn/threads.py)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from amn.threads import CorePlan, usable_cores


@pytest.mark.skipif(len(usable_cores()) < 2 or not hasattr(os, "sched_setaffinity"),
                    reason="needs Linux and two usable cores")
def test_update_thread_gets_the_first_core_and_the_main_thread_the_rest_then_back():
    before = os.sched_getaffinity(0)
    plan = CorePlan(True)
    assert plan.enabled
    plan.pin_main()
    try:
        assert os.sched_getaffinity(0) == plan.main_cores == set(sorted(before)[1:])
        with ThreadPoolExecutor(1, initializer=plan.update_thread_initializer(1)) as pool:
            inside = pool.submit(lambda: (os.sched_getaffinity(0), torch.get_num_threads())).result()
        assert inside == ({min(before)}, 1)
    finally:
        plan.restore_main()
    assert os.sched_getaffinity(0) == before


def test_disabled_plan_changes_nothing():
    before = usable_cores()
    plan = CorePlan(False)
    plan.pin_main()
    with ThreadPoolExecutor(1, initializer=plan.update_thread_initializer(0)) as pool:
        assert sorted(pool.submit(usable_cores).result()) == before
    plan.restore_main()
    assert usable_cores() == before
