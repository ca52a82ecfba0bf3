"""``precision: auto | float32 | bfloat16``: the choice, the update's losses, the labels, resume across precisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fp_bounds import forward_error_bound

from amn import precision as prec
from amn.config import load_config
from amn.errors import UsageError
from amn.losses import get_loss

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
TINY = ["learning_starts_per_game=100", "replay_capacity_per_game=1000", "log_every_agent_steps=100",
        "heldout_states_per_game=16", "mimicry_every_agent_steps=200"]
#: bfloat16's unit roundoff: 8 significant bits.
U_BF16 = 2.0 ** -8


def test_auto_takes_bfloat16_exactly_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(prec, "native_bfloat16", lambda device: True)
    assert prec.resolve_precision("auto", cpu) == "bfloat16"
    assert "auto: cpu has native bfloat16" in prec.describe("bfloat16", "auto", cpu)
    monkeypatch.setattr(prec, "native_bfloat16", lambda device: False)
    assert prec.resolve_precision("auto", cpu) == "float32"
    assert prec.resolve_precision("bfloat16", cpu) == "bfloat16"  # asked for: done, and said to be emulated
    assert "emulated" in prec.describe("bfloat16", "bfloat16", cpu)
    with pytest.raises(UsageError, match="precision must be one of auto, float32, bfloat16"):
        prec.resolve_precision("fp16", cpu)
    with pytest.raises(UsageError, match="precision must be one of"):
        load_config(SMOKE, ["precision=half"])


def test_native_bfloat16_reads_the_cpu_flags():
    flags = [torch.cpu._is_avx512_bf16_supported(), torch.cpu._is_amx_tile_supported()]
    assert prec.native_bfloat16(torch.device("cpu")) == any(flags)


def test_bfloat16_losses_of_200_updates_agree_with_float32_within_the_rounding_bound():
    """Along 200 float32 updates, the loss at the same weights and batch under bfloat16 autocast.

    Tolerance, derived: autocast rounds each convolution's and matrix product's operands to
    bfloat16 (u = 2⁻⁸), accumulates in float32 and rounds the output to bfloat16, so the logits
    move by at most Δz = ``forward_error_bound(layers, x, u, rounding="operands")``
    (tests/fp_bounds.py: 8 standard deviations of the probabilistic model).
    Cross-entropy is 1-Lipschitz per logit in the sense |Δℓ| ≤ Σ_i |p_i − y_i|·|Δz_i| + ‖Δz‖²∞
    (first order, plus a second-order allowance: its Hessian diag(p) − ppᵀ has norm ≤ 1/2), and
    the batch loss is the mean over rows.
    """
    from amn.student import Student

    torch.manual_seed(0)
    student = Student(4)
    optimizer = torch.optim.Adam(student.parameters(), lr=2.5e-4, eps=3e-4, fused=True)
    loss_fn = get_loss("ce")
    gen = torch.Generator().manual_seed(1)
    obs = torch.randint(0, 256, (8, 32, 4, 84, 84), generator=gen, dtype=torch.uint8)  # 8 batches, cycled
    mask = torch.zeros(32, 18, dtype=torch.bool)
    for g, k in enumerate((6, 4, 6, 4)):
        mask[8 * g:8 * g + 8, :k] = True
    target = torch.softmax(torch.randn(8, 32, 18, generator=gen) * 2, -1) * mask
    target = target / target.sum(-1, keepdim=True)
    ids = torch.arange(4).repeat_interleave(8)
    layers = [*student.trunk, student.heads[0]]
    worst = 0.0
    for t in range(200):
        b = t % 8
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            z16 = student(obs[b], ids).float()
        z32 = student(obs[b], ids)
        loss32 = loss_fn(z32, target[b], mask).loss
        loss16 = loss_fn(z16, target[b], mask).loss
        with torch.no_grad():
            x = obs[b].double() / 255.0
            dz = forward_error_bound(layers, x, u=U_BF16, rounding="operands")
            p = torch.softmax(z32.double().masked_fill(~mask, float("-inf")), -1)
            bound = ((p - target[b].double()).abs() * dz * mask).sum(-1) + (dz * mask).amax(-1) ** 2
            diff = (loss16.double() - loss32.detach().double()).abs()
            assert (diff <= bound).all(), f"update {t}: |Δloss| {diff.max():.3g} > bound {bound[diff.argmax()]:.3g}"
            worst = max(worst, float((diff / bound).max()))
        optimizer.zero_grad()
        loss32.mean().backward()
        optimizer.step()
    assert worst > 0, worst  # bfloat16 did round: the comparison is not between two identical runs


def test_bfloat16_run_labels_in_float32_and_resumes_across_precisions(tmp_path):
    """The stored soft targets do not depend on the precision (experts label in float32:
    amn/precision.py gives the measurement), and a run resumes in the other precision."""
    from amn.collect import Collector, load_experts
    from amn.replay import GameReplay
    from amn.student import Student
    from amn.trainer import train

    cfg = load_config(SMOKE, TINY)
    experts = load_experts(cfg)
    stored = {}
    for p in ("float32", "bfloat16"):
        replay = GameReplay(256, 1)
        collector = Collector(cfg, experts, [replay], seed=0, precision=p)
        for _ in range(40):
            collector.step(Student(1), 1.0, np.random.default_rng(0))  # ε = 1: the same random actions
        collector.close()
        stored[p] = replay.targets[:, :40].astype(np.float32)
        sums = replay.sample(16, np.random.default_rng(0))["target"].sum(-1)
        torch.testing.assert_close(sums, torch.ones(16), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(stored["float32"], stored["bfloat16"])

    run = tmp_path / "run"
    first = train(load_config(SMOKE, TINY + ["precision=bfloat16", "total_agent_steps=300"]), run,
                  progress=False, evaluate=False)
    assert first["status"] == "finished"
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["precision"] == "bfloat16"
    assert all(v.dtype == torch.float32 for v in ckpt["student"].values() if v.is_floating_point())
    for p, steps in (("float32", 400), ("bfloat16", 500)):
        from amn.resume import load_run_config

        cfg = load_run_config(run, [f"precision={p}", f"total_agent_steps={steps}"])
        out = train(cfg, run, resume=True, progress=False, evaluate=False)
        assert out["agent_steps"] == steps
        assert torch.load(run / "checkpoint.pt", weights_only=True)["config"]["precision"] == p
    assert "precision: bfloat16" in (run / "config.yaml").read_text()
