"""The update on a second thread (``overlap_update``): the student learns while the games step.

Why: the update (the student's forward, backward and Adam step) is the loop's largest part, and
it runs on a core of its own beside the main thread's acting, stepping and labelling
(docs/speed.md). Every moment that core waits for the main thread is lost. So the next update can
be queued behind the one in flight (:meth:`UpdateThread.submit` before :meth:`UpdateThread.wait`),
and the update thread itself copies the new weights into the copy of the student the games act
with, so that it goes from one update straight to the next.

The run stays the sequential loop's number for number, whatever the threads' timing:

- update ``t`` trains on minibatches drawn before step ``t`` stores anything (the trainer draws
  them), so step ``t`` may run beside it;
- updates run one at a time and in order (one worker thread);
- step ``t`` acts with the weights after update ``t - 1``. Two actors take turns: each update
  copies the weights into the one the games are not acting with. Update ``t``'s is the actor of
  step ``t - 1``, which had finished before update ``t`` was submitted, and step ``t + 1`` acts
  with it once :meth:`wait` has returned update ``t``.

The caller keeps the rule that makes queueing safe: it queues update ``t + 1`` only after step
``t`` has finished, and only when nothing before step ``t + 1`` reads the student, the optimiser
or the logged scalars (a checkpoint, an evaluation, a log point), or talks to other ranks.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import nn


class UpdateThread:
    """Runs ``update_all(minibatches, step)`` on one worker thread and publishes the weights.

    ``student`` is the module the updates train; :attr:`actor` is the copy the games act with
    (in bfloat16 when ``precision`` is, which computes the same logits under autocast as the float32
    student: autocast's cast of each weight is the same round-to-nearest-even, done once per update).
    ``initializer`` runs once on the worker thread (its core and torch threads, ``amn/threads.py``).
    """

    def __init__(self, update_all: Callable[[list, int], None], student: nn.Module, precision: str,
                 initializer: Callable[[], None] | None = None):
        self.update_all = update_all
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amn-update", initializer=initializer)
        first = copy.deepcopy(student)
        if precision == "bfloat16":
            first.to(torch.bfloat16)
        self.actors = [first, copy.deepcopy(first)]
        # The weights' refresh, tensor by tensor: 0.17 ms for the 4-game student on one core of the
        # AMD EPYC, against 0.31 ms for load_state_dict, whose Python walks every key.
        sources = [*student.parameters(), *student.buffers()]
        self.mirrors = [list(zip([*a.parameters(), *a.buffers()], sources, strict=True)) for a in self.actors]
        self.acting = 0  # the actor the games act with
        self.in_flight: deque[tuple[Future, int]] = deque()  # (update, its actor), oldest first
        self.failed = False  # an update raised: the ones queued behind it do nothing

    @property
    def actor(self) -> nn.Module:
        """The student's weights after the last update :meth:`wait` returned."""
        return self.actors[self.acting]

    def submit(self, minibatches: list, step: int) -> None:
        """Queue the updates due at agent step ``step``; they publish into the other actor."""
        # The other actor than the last submitted update's (all waited for: the one acting).
        target = 1 - (self.in_flight[-1][1] if self.in_flight else self.acting)
        self.in_flight.append((self.pool.submit(self._run, minibatches, step, target), target))

    def _run(self, minibatches: list, step: int, target: int) -> None:
        if self.failed:  # queued behind an update that raised: it would train on from there
            return
        try:
            self.update_all(minibatches, step)
        except BaseException:
            self.failed = True
            raise
        with torch.no_grad():
            for mine, theirs in self.mirrors[target]:
                mine.copy_(theirs)

    def wait(self) -> None:
        """Wait for the oldest update in flight (re-raising its error); the games then act with its weights."""
        future, target = self.in_flight.popleft()
        future.result()
        self.acting = target

    def close(self) -> None:
        """Stop: an update running finishes; queued ones are dropped."""
        self.pool.shutdown(wait=True, cancel_futures=True)
