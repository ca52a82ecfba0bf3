"""TensorBoard logging: running means between log points, written per tag.

Tags: ``<Game>/policy_regression_loss``, ``<Game>/episode_return``,
``<Game>/student_entropy``, ``<Game>/target_entropy``, ``<Game>/loss_diag/<key>``
(the loss's diagnostics counts, summed between log points),
``<Game>/feature_regression_loss``, and ``train/*`` (epsilon, lr, grad_norm,
loss, updates) and ``perf/*`` (agent_steps_per_s, updates_per_s, update_ms: the learner's wall
time per update, amn/learner.py). The x axis is
``agent_steps`` summed over all games.
"""

from __future__ import annotations

from collections import defaultdict


class Scalars:
    """Accumulates scalars between log points: ``mean`` tags average, ``total`` tags sum."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.totals: dict[str, float] = defaultdict(float)

    def mean(self, tag: str, value: float) -> None:
        self.sums[tag] += value
        self.counts[tag] += 1

    def total(self, tag: str, value: float) -> None:
        self.totals[tag] += value

    def flush(self, writer, step: int) -> dict[str, float]:
        """Write everything accumulated at ``step``; return it and start over."""
        out = {tag: self.sums[tag] / self.counts[tag] for tag in self.sums}
        out.update(self.totals)
        for tag, value in out.items():
            writer.add_scalar(tag, value, step)
        self.__init__()
        return out
