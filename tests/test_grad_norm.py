"""amn.learner.clip_grad_norm: a finite gradient has a finite norm (float32's sum of squares overflows
at ~1.8e19; the norm is then taken again in float64), and clipping is torch's elsewhere."""

from __future__ import annotations

import math

import pytest


def test_a_finite_gradient_has_a_finite_norm_where_float32_overflows():
    import torch

    from amn.learner import clip_grad_norm

    params = [torch.nn.Parameter(torch.zeros(1000)), torch.nn.Parameter(torch.zeros(3, 4))]
    params[0].grad = torch.full((1000,), 1e20)
    params[1].grad = torch.full((3, 4), -3e19)
    reference = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params))  # ~3.2e21
    assert not torch.isfinite(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])))  # float32
    before = [p.grad.clone() for p in params]
    norm = clip_grad_norm(params, 0.0)  # 0: no clipping, the norm only
    assert float(norm) == pytest.approx(reference, rel=1e-12)
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before))  # untouched
    clipped = clip_grad_norm(params, 10.0)
    assert float(clipped) == pytest.approx(reference, rel=1e-12)
    after = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params))
    assert after == pytest.approx(10.0, rel=1e-5)
    # an ordinary gradient: the same clipping as torch's
    a, b = torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(5))
    a.grad, b.grad = torch.arange(5.0), torch.arange(5.0)
    ours, theirs = clip_grad_norm([a], 2.0), torch.nn.utils.clip_grad_norm_([b], 2.0)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6) and torch.allclose(a.grad, b.grad, rtol=1e-6)


def test_an_update_with_a_float32_overflowing_gradient_norm_logs_the_finite_float64_norm():
    import torch

    from amn.collect import action_mask
    from amn.config import GameConfig, TrainConfig
    from amn.learner import Learner, build_student, make_loss
    from amn.losses import LossOutput
    from amn.tb import Scalars
    from experts.atari import minimal_action_set

    cfg = TrainConfig(games=[GameConfig("Pong", "unused")], batch_per_game=4, torch_threads=1)
    student, projections, params, optimizer = build_student(cfg)
    ce = make_loss(cfg)

    def huge(logits, target, mask, expert_values=None):  # a finite loss whose gradient is ~1e19 per logit
        out = ce(logits, target, mask)
        return LossOutput(loss=out.loss * 1e20, diagnostics=out.diagnostics)

    mask = action_mask(minimal_action_set("Pong"))
    gen = torch.Generator().manual_seed(0)
    target = torch.softmax(torch.randn(4, 18, generator=gen).masked_fill(~mask, float("-inf")), -1)
    batch = {"obs": torch.randint(0, 256, (4, 4, 84, 84), generator=gen, dtype=torch.uint8), "target": target}
    stats = Scalars()
    learner = Learner(cfg, student, projections, params, optimizer, huge, [0], mask.unsqueeze(0), stats)
    learner.update([batch], step=0)  # before the fix: NonFiniteLoss("non-finite gradient norm ...")
    grads = [p.grad for p in params if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert not torch.isfinite(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))  # float32 overflows
    reference = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    logged = stats.sums["train/grad_norm"] / stats.counts["train/grad_norm"]
    assert math.isfinite(logged) and logged == pytest.approx(reference, rel=1e-9)
    update_ms = stats.sums["perf/update_ms"] / stats.counts["perf/update_ms"]
    assert math.isfinite(update_ms) and update_ms > 0
    cpu_ms = stats.sums["perf/update_cpu_ms"] / stats.counts["perf/update_cpu_ms"]
    assert math.isfinite(cpu_ms) and cpu_ms > 0


def _learner(scale: float, max_grad_norm: float = 0.0):
    """A Learner on 4 Pong rows whose loss is cross-entropy times ``scale``; returns (learner, batch, params)."""
    import torch

    from amn.collect import action_mask
    from amn.config import GameConfig, TrainConfig
    from amn.learner import Learner, build_student, make_loss
    from amn.losses import LossOutput
    from amn.tb import Scalars
    from experts.atari import minimal_action_set

    cfg = TrainConfig(games=[GameConfig("Pong", "unused")], batch_per_game=4, torch_threads=1,
                      max_grad_norm=max_grad_norm)
    student, projections, params, optimizer = build_student(cfg)
    ce = make_loss(cfg)

    def scaled(logits, target, mask, expert_values=None):
        out = ce(logits, target, mask)
        return LossOutput(loss=out.loss * scale, diagnostics=out.diagnostics)

    mask = action_mask(minimal_action_set("Pong"))
    gen = torch.Generator().manual_seed(0)
    target = torch.softmax(torch.randn(4, 18, generator=gen).masked_fill(~mask, float("-inf")), -1)
    batch = {"obs": torch.randint(0, 256, (4, 4, 84, 84), generator=gen, dtype=torch.uint8), "target": target}
    learner = Learner(cfg, student, projections, params, optimizer, scaled, [0], mask.unsqueeze(0), Scalars())
    return learner, batch, params


def _biggest_entry_at_scale_one() -> float:
    learner, batch, params = _learner(1.0)
    learner.update([batch], step=0)
    return max(float(p.grad.abs().max()) for p in params if p.grad is not None)


def test_adams_second_moment_overflows_under_a_steady_gradient_past_sqrt_max():
    """What the learner's check stands on: v ← β₂v + (1 − β₂)g² tends to g², so a steady |g| above
    √max = 1.84e19 overflows float32 after enough steps (5e20 at the second), and below it never does."""
    import torch

    def steps_to_overflow(g: float, steps: int) -> int | None:
        p = torch.nn.Parameter(torch.zeros(2))
        opt = torch.optim.Adam([p], betas=(0.9, 0.999), fused=True)
        for k in range(1, steps + 1):
            p.grad = torch.full((2,), g)
            opt.step()
            if not torch.isfinite(opt.state[p]["exp_avg_sq"]).all():
                return k
        return None

    assert steps_to_overflow(5e20, 10) == 2
    assert steps_to_overflow(1e20, 100) is not None  # measured: step 35
    assert steps_to_overflow(1.8e19, 3000) is None


def test_the_learner_stops_before_adam_would_freeze_a_weight_and_trains_below_it():
    import torch

    from amn.errors import NonFiniteLoss

    c = _biggest_entry_at_scale_one()
    # entries of ~5e20: the first step is fine (v was 0), the second would overflow v: stopped there
    learner, batch, params = _learner(5e20 / c)
    learner.update([batch], step=0)
    with pytest.raises(NonFiniteLoss, match="overflow Adam's float32 second moment.*max_grad_norm"):
        learner.update([batch], step=1)
    # entries of ~1e19 (< √max): 30 steps, every moment finite, the weights still moving at the last
    learner, batch, params = _learner(1e19 / c)
    for step in range(30):
        before = [p.detach().clone() for p in params]
        learner.update([batch], step=step)
    state = learner.optimizer.state
    assert all(torch.isfinite(state[p]["exp_avg_sq"]).all() for p in params if p in state)
    assert any(not torch.equal(p.detach(), b) for p, b in zip(params, before))
    # clipping keeps the entries small: the huge loss trains
    learner, batch, params = _learner(5e20 / c, max_grad_norm=10.0)
    for step in range(3):
        learner.update([batch], step=step)
