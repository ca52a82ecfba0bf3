"""amn/overlap.py: the update thread's queue and its two actors, with a stand-in update.

The stand-in sets the student's one weight to the update's step, so the actor's weight says which
update's weights the games act with. tests/test_trainer.py runs the real loop both ways."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from amn.overlap import UpdateThread


def stand_in(student: nn.Linear, ran: list[int], delay: float = 0.02):
    def update_all(minibatches: list, step: int) -> None:
        time.sleep(delay)  # long enough that the next update is queued before this one ends
        with torch.no_grad():
            student.weight.fill_(float(step))
        ran.append(step)
    return update_all


def weight(actor: nn.Module) -> float:
    return float(actor.weight.detach())


def test_each_step_acts_with_the_last_waited_update_and_no_update_writes_into_it():
    """The trainer's order: submit t+1 behind t, wait for t, act (t+1). While the games act, the
    queued update runs and publishes, but never into the actor in use."""
    student, ran = nn.Linear(1, 1, bias=False), []
    updates = UpdateThread(stand_in(student, ran), student, "float32")
    try:
        updates.submit([], 1)
        for t in range(1, 12):
            updates.submit([], t + 1)  # queued behind update t
            assert len(updates.in_flight) == 2
            updates.wait()  # update t
            acting = updates.actor
            seen = weight(acting)
            time.sleep(0.03)  # meanwhile update t + 1 runs and publishes into the other actor
            assert weight(acting) == seen == float(t), (t, seen)
        updates.wait()
        assert weight(updates.actor) == 12.0 and ran == list(range(1, 13))
    finally:
        updates.close()


def test_unqueued_updates_alternate_actors_too():
    """Submit, wait, act, as the loop does at a log point or a checkpoint: the same weights."""
    student, ran = nn.Linear(1, 1, bias=False), []
    updates = UpdateThread(stand_in(student, ran, delay=0.0), student, "float32")
    try:
        assert weight(updates.actor) == weight(student)  # before any update: the initial weights
        actors = []
        for t in range(1, 5):
            updates.submit([], t)
            updates.wait()
            actors.append(id(updates.actor))
            assert weight(updates.actor) == float(t)
        assert actors[0] == actors[2] != actors[1] == actors[3]
    finally:
        updates.close()


def test_an_error_is_raised_by_wait_and_the_queued_update_never_runs():
    student, ran = nn.Linear(1, 1, bias=False), []
    gate = threading.Event()

    def update_all(minibatches: list, step: int) -> None:
        if step == 1:
            gate.wait(5)  # update 2 is queued before update 1 fails
            raise RuntimeError("update 1 failed")
        ran.append(step)

    updates = UpdateThread(update_all, student, "float32")
    updates.submit([], 1)
    updates.submit([], 2)
    gate.set()
    with pytest.raises(RuntimeError, match="update 1 failed"):
        updates.wait()
    updates.close()  # drops update 2: after a failed update it would train on
    assert ran == []


def test_bfloat16_actors_hold_the_weights_cast_once():
    student, ran = nn.Linear(3, 2), []
    updates = UpdateThread(stand_in(student, ran, delay=0.0), student, "bfloat16")
    try:
        with torch.no_grad():
            student.bias.copy_(torch.tensor([1 / 3, 2 / 3]))
        updates.submit([], 1)
        updates.wait()
        assert all(p.dtype == torch.bfloat16 for p in updates.actor.parameters())
        assert torch.equal(updates.actor.bias, student.bias.to(torch.bfloat16))
        assert torch.equal(updates.actor.weight, torch.full((2, 3), 1.0, dtype=torch.bfloat16))
    finally:
        updates.close()
