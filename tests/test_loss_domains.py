"""Every student loss is finite in value and gradient on every finite input (float32, float64).

The five unbounded Noel losses (noel-m, noel-m-full, noel-param-m, noel-l, noel-l-full) are
exact below a ceiling e^t₀ and saturate beyond it (amn/losses/noel.py, ``_saturated_sum_exp``);
their values and gradients are checked against an independent 50-digit mpmath reference that
applies the documented saturation to the exact loss. The adversarial sweep behind the issue is
``scripts/loss_domain_sweep.py``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from loss_cases import CASES

from amn.losses.library import LOSSES, get_loss

A = 18
# every case of tests/loss_cases.py, and cc (whose own tests are in test_losses.py and test_cc_normaliser.py)
ALL_CASES = [("cc", {}), *CASES]
UNBOUNDED = [("noel-m", {}), ("noel-m-full", {}), ("noel-param-m", {}), ("noel-param-m", {"alpha": 0.5}),
             ("noel-param-m", {"alpha": 2.5}), ("noel-l", {}), ("noel-l-full", {})]
UNBOUNDED_IDS = [n + "".join(f"-{k}{v}" for k, v in o.items()) for n, o in UNBOUNDED]
# the documented ceiling: t₀ = log(largest finite) − 24
T0 = {torch.float32: math.log(torch.finfo(torch.float32).max) - 24,
      torch.float64: math.log(torch.finfo(torch.float64).max) - 24}
DTYPES = [torch.float32, torch.float64]
# spreads at and around every loss's thresholds (e.g. 64.7/88.7 float32, 685.8/709.8 float64)
SPREADS = [0.0, 1e-9, 1e-3, 1.0, 10.0, 30.0, 44.0, 64.0, 65.0, 88.0, 89.0, 100.0, 130.0, 131.0,
           177.0, 300.0, 685.0, 686.0, 709.0, 710.0, 1000.0]


# --------------------------------------------------------------------------- #
# Rows
# --------------------------------------------------------------------------- #


@st.composite
def adversarial_row(draw, max_spread: float = 1000.0):
    """(z [K] float64 rounded to dtype, y [K], slots [K], dtype): K = 2..18 valid logits with
    spread up to ``max_spread`` (exactly), exact ties at the max, the min or anywhere, offsets
    0 / −500 / 1e4, one-hot (possibly at the smallest logit) or soft targets."""
    dtype = draw(st.sampled_from(DTYPES))
    k = draw(st.integers(2, A))
    spread = draw(st.one_of(st.sampled_from([s for s in SPREADS if s <= max_spread]),
                            st.floats(0.0, max_spread)))
    u = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k)))
    z = (u - u.min()) / (u.max() - u.min()) if u.max() > u.min() else np.zeros(k)
    z = z * spread
    n_tie = draw(st.integers(0, k - 1))
    if n_tie:
        idx = list(draw(st.permutations(range(k))))[: n_tie + 1]
        z[idx] = {"max": z.max(), "min": z.min(), "any": z[idx[0]]}[draw(st.sampled_from(["max", "min", "any"]))]
    z = z + draw(st.sampled_from([0.0, -500.0, 1e4]))
    z = torch.tensor(z, dtype=dtype).double().numpy()  # the reference sees the rounded inputs
    kind = draw(st.sampled_from(["onehot", "onehot-at-min", "soft"]))
    y = np.zeros(k)
    if kind == "soft":
        w = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k).filter(lambda w: sum(w) > 1e-3)))
        y = w / w.sum()
    else:
        y[int(np.argmin(z)) if kind == "onehot-at-min" else draw(st.integers(0, k - 1))] = 1.0
    slots = np.array(list(draw(st.permutations(range(A))))[:k])
    return z, y, slots, dtype


def embed(z, y, slots, dtype, junk: float = 1e30):
    """[1, A] logits (finite junk at invalid slots), target, mask, expert values."""
    logits = torch.full((1, A), junk, dtype=dtype)
    logits[0, 1::2] = -junk
    logits[0, slots] = torch.tensor(z, dtype=dtype)
    target = torch.zeros(1, A, dtype=dtype)
    target[0, slots] = torch.tensor(y, dtype=dtype)
    mask = torch.zeros(1, A, dtype=torch.bool)
    mask[0, slots] = True
    values = torch.zeros(1, A, dtype=dtype)
    values[0, slots] = torch.tensor(z[::-1].copy(), dtype=dtype)
    return logits, target, mask, values


def value_and_grad(name, opts, logits, target, mask, values):
    z = logits.clone().requires_grad_(True)
    loss = get_loss(name, **opts)(z, target, mask, expert_values=values).loss
    (grad,) = torch.autograd.grad(loss.sum(), z)
    return loss.detach(), grad


# --------------------------------------------------------------------------- #
# Independent reference: the exact loss (50 digits), then the documented saturation
# --------------------------------------------------------------------------- #


def mp_terms(name: str, alpha: float, z: list, c: int):
    """(t_i, m): the loss is Σ_i (e^{t_i} − m), t_i exact, from p and 1 − p (no cancellation)."""
    top = max(z)
    e = [mp.exp(x - top) for x in z]
    s = mp.fsum(e)
    p = [x / s for x in e]
    q = [mp.fsum(e[:i] + e[i + 1:]) / s for i in range(len(z))]  # 1 − p_i, full relative precision
    # log of a number near 1 from its complement: 50 digits of 1 − 1e-45 keep only 5 of the 1e-45
    lp = [mp.log1p(-qi) if qi < 0.5 else mp.log(pi) for pi, qi in zip(p, q)]
    lq = [mp.log1p(-pi) if pi < 0.5 else mp.log(qi) for pi, qi in zip(p, q)]
    others = [i for i in range(len(z)) if i != c]
    if name == "noel-m":
        return [lq[c] - lp[c]], 0
    if name == "noel-m-full":
        return [lq[c] - lp[c]] + [lp[i] - lq[i] for i in others], 0
    if name == "noel-param-m":
        return [-alpha * lp[c]], 1
    # log(1 − x²), x = 1 − p_c = q_c or x = p_i: log1p(−x²) for small x, else log(1 − x) + log1p(x)
    l1m2 = lambda x, lx, l1mx: mp.log1p(-x * x) if x < 0.5 else l1mx + mp.log1p(x)  # noqa: E731
    if name == "noel-l":
        return [-l1m2(q[c], lq[c], lp[c]) / 2], 0
    if name == "noel-l-full":
        return [-l1m2(q[c], lq[c], lp[c]) / 2] + [-l1m2(p[i], lp[i], lq[i]) / 2 for i in others], 1
    raise KeyError(name)


def mp_loss(name: str, alpha: float, z: list, c: int, t0: float):
    ts, m = mp_terms(name, alpha, z, c)
    big = mp.log(mp.fsum(mp.exp(t) for t in ts))
    if big <= t0:
        return mp.fsum((mp.expm1(t) if m else mp.exp(t)) for t in ts)
    return mp.exp(t0) * (1 + mp.log1p(big - t0)) - m * len(ts)


def expert_index(target: torch.Tensor, slots) -> int:
    """c as a position in the row's valid logits: the expert's argmax over the shared slots,
    the first slot on ties (as the library breaks them)."""
    return list(slots).index(int(target[0].argmax()))


def _mp_args(opts, z, c, dtype):
    mp.mp.dps = 50
    return mp.mpf(opts.get("alpha", 1.0)), [mp.mpf(float(x)) for x in z], c, mp.mpf(T0[dtype])


def reference_value(name, opts, z, c, dtype) -> float:
    """The saturated loss at the (rounded) logits z, expert's action c, 50 digits."""
    return float(mp_loss(name, *_mp_args(opts, z, c, dtype)))


def reference_grad(name, opts, z, c, dtype) -> np.ndarray:
    """Its gradient over the valid logits, by mpmath's numerical differentiation, at 50 digits plus
    those the row's dynamic range needs: an entry can be e^(−2·spread) of the loss (noel-l at p_c ≈ 1:
    ∂ℓ/∂z_j ≈ ε·p_j with ε = 1 − p_c), which 50 digits alone would round to 0."""
    alpha, zz, c, t0 = _mp_args(opts, z, c, dtype)

    def at(dps: int) -> np.ndarray:
        with mp.workdps(dps):
            return np.array([float(mp.diff(lambda h: mp_loss(name, alpha, zz[:j] + [zz[j] + h] + zz[j + 1:], c, t0), 0))
                             for j in range(len(zz))])

    grad = at(50)
    # resolved when the gradient is not far below the loss itself; else (ℓ ≈ 1 + ε², grad ≈ ε²) more digits
    if np.abs(grad).max() < 1e-30 * abs(float(mp_loss(name, alpha, zz, c, t0))):
        grad = at(50 + math.ceil(2 * float(max(zz) - min(zz)) / math.log(10)))
    return grad


def tolerance(dtype, spread: float, alpha: float = 1.0) -> float:
    """Relative error allowed: log_softmax gives log p to an absolute few eps × (1 + spread),
    and the loss is e^(that) (α times it for ParamM)."""
    return 16 * torch.finfo(dtype).eps * (1 + spread) * max(1.0, alpha)


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #

BOUNDS = {"cc": (-math.inf, math.inf),  # a density's negative log-likelihood can be < 0
          "noel-l": (1.0, math.inf), "parabolic": (0.0, 1.0), "circle": (0.0, 1.0), "cos": (0.0, 1.0)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adversarial_row())
def test_every_loss_finite_in_value_and_gradient(row):
    """K = 2..18, spreads up to 1000, exact ties, offsets, float32 and float64: every loss and
    its gradient are finite, invalid logits get exactly zero gradient, values keep their range."""
    z, y, slots, dtype = row
    logits, target, mask, values = embed(z, y, slots, dtype)
    for name, opts in ALL_CASES:
        loss, grad = value_and_grad(name, opts, logits, target, mask, values)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), (name, opts)
        assert (grad[~mask] == 0).all(), name
        lo, hi = BOUNDS.get(name, (0.0, math.inf))
        # rounding: a value 1 − eps below 1 for noel-l, or −eps for a loss whose minimum is 0
        assert lo - 4 * torch.finfo(dtype).eps <= float(loss) <= hi + 4 * torch.finfo(dtype).eps, (name, float(loss))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adversarial_row())
def test_unbounded_noel_values_exact_or_documented_saturation(row):
    """Value against the 50-digit reference: the exact loss below the ceiling, the
    documented saturation e^t₀ (1 + log1p(T − t₀)) − m·n above it."""
    z, y, slots, dtype = row
    logits, target, mask, values = embed(z, y, slots, dtype)
    spread = float(z.max() - z.min())
    for name, opts in UNBOUNDED:
        got = float(get_loss(name, **opts)(logits, target, mask).loss)
        want = reference_value(name, opts, z, expert_index(target, slots), dtype)
        rtol = tolerance(dtype, spread, opts.get("alpha", 1.0))
        assert abs(got - want) <= rtol * abs(want) + torch.finfo(dtype).tiny, (name, opts, got, want, rtol)


# Found by hypothesis: noel-l at p_c ≈ 1 has a gradient of ~1.8e-281 (ε², ε = e^−323), which a 50-digit
# reference rounds to 0.
_TINY_GRADIENT = (np.array([743.62336407, 0, 0, 420.40977887] + [0.0] * 11), np.eye(15)[0], np.arange(15),
                  torch.float64)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adversarial_row())
@example(_TINY_GRADIENT)
def test_unbounded_noel_gradients_match_reference(row):
    """Gradient against mpmath's numerical derivative of the (saturated) 50-digit reference:
    within a few eps × (1 + spread) of its largest entry, and of the same sign entry by entry."""
    z, y, slots, dtype = row
    logits, target, mask, values = embed(z, y, slots, dtype)
    spread = float(z.max() - z.min())
    for name, opts in UNBOUNDED:
        _, grad = value_and_grad(name, opts, logits, target, mask, values)
        got = grad[0, torch.tensor(slots)].double().numpy()
        want = reference_grad(name, opts, z, expert_index(target, slots), dtype)
        scale = np.abs(want).max()
        err = tolerance(dtype, spread, opts.get("alpha", 1.0)) * scale + torch.finfo(dtype).tiny
        assert np.abs(got - want).max() <= err, (name, opts, got, want)
        big = np.abs(want) > err
        assert (np.sign(got[big]) == np.sign(want[big])).all(), (name, opts, got, want)


# --------------------------------------------------------------------------- #
# Beyond the ceiling: saturation, monotonicity, gradient direction
# --------------------------------------------------------------------------- #


def _gap_rows(dtype, gaps, k: int = 4, wrong_dominant: bool = False):
    """Rows with the expert's action c = slot 0 at 0 and the others at +gap (c improbable), or,
    ``wrong_dominant``, one wrong action at +gap and the rest at +gap/2 (1 − p_1 tiny too)."""
    z = np.zeros((len(gaps), k))
    for r, g in enumerate(gaps):
        z[r, 1:] = g / 2 if wrong_dominant else g
        z[r, 1] = g
    z = torch.tensor(z, dtype=dtype).double().numpy()
    y = np.zeros(k)
    y[0] = 1.0
    return z, y


GAPS = [10.0, 44.0, 64.0, 65.0, 88.0, 89.0, 130.0, 131.0, 300.0, 685.0, 686.0, 709.0, 710.0, 1372.0,
        1373.0, 3e3, 1e4, 1e6, 1e15, 1e30, 1e37]


@pytest.mark.parametrize("wrong_dominant", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, opts", UNBOUNDED, ids=UNBOUNDED_IDS)
def test_saturated_rows_match_reference_and_increase(name, opts, dtype, wrong_dominant):
    """Gaps from 10 to 1e37 (past every ceiling in both dtypes): the value is the documented
    function of the exact loss, never decreasing as the gap grows; the gradient is finite, the
    exact gradient times a factor in (0, 1] (mpmath), so ∂ℓ/∂z_c < 0."""
    z, y = _gap_rows(dtype, GAPS, wrong_dominant=wrong_dominant)
    slots = np.arange(z.shape[1])
    got_values = []
    for r, gap in enumerate(GAPS):
        logits, target, mask, values = embed(z[r], y, slots, dtype)
        loss, grad = value_and_grad(name, opts, logits, target, mask, values)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), gap
        want = reference_value(name, opts, z[r], 0, dtype)
        rtol = tolerance(dtype, gap, opts.get("alpha", 1.0)) if gap < 1e4 else 1e-6
        assert float(loss) == pytest.approx(want, rel=rtol), gap
        got_values.append(float(loss))
        g = grad[0, : z.shape[1]].double().numpy()
        assert g[0] < 0 and g[1] > 0, (gap, g)
        assert abs(g.sum()) <= 1e-6 * np.abs(g).max(), (gap, g)  # shift invariance
        if gap <= 1e4:  # mp.diff at gap 1e30 would need 30+ digits of headroom in h
            want_g = reference_grad(name, opts, z[r], 0, dtype)
            np.testing.assert_allclose(g, want_g, rtol=0, atol=max(rtol, 1e-6) * np.abs(want_g).max())
    assert all(b >= a for a, b in zip(got_values, got_values[1:])), got_values
    assert got_values[-1] < torch.finfo(dtype).max * 1e-6


# --------------------------------------------------------------------------- #
# The second measurement, and the helper itself
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", DTYPES)
def test_wide_normal_logits_stay_finite(dtype):
    """K = 6, N(0, σ²) logits, Dirichlet(1) targets, 200 rows per σ: before the saturation,
    noel-m was non-finite on 14/69/118/169 of 200 rows at σ = 30/50/100/1000 (float32).
    Every loss is now finite; rows below the ceiling keep the exact value."""
    rng = np.random.default_rng(0)
    for sigma in (10.0, 30.0, 50.0, 100.0, 1000.0):
        mask = torch.zeros(200, A, dtype=torch.bool)
        mask[:, :6] = True
        logits = torch.zeros(200, A, dtype=dtype)
        logits[:, :6] = torch.tensor(rng.normal(0.0, sigma, (200, 6)), dtype=dtype)
        target = torch.zeros(200, A, dtype=dtype)
        target[:, :6] = torch.tensor(rng.dirichlet(np.ones(6), 200), dtype=dtype)
        for name, opts in ALL_CASES:
            loss, grad = value_and_grad(name, opts, logits, target, mask, logits.flip(-1))
            assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), (name, sigma)
        loss = get_loss("noel-m")(logits, target, mask).loss
        for r in range(0, 200, 10):
            z = logits[r, :6].double().numpy()
            spread = float(z.max() - z.min())
            want = reference_value("noel-m", {}, z, int(target[r].argmax()), dtype)
            assert float(loss[r]) == pytest.approx(want, rel=tolerance(dtype, spread)), (sigma, r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturation_is_c1_increasing_and_bounded(dtype):
    from amn.losses.noel import _log_ceiling, _saturated_sum_exp

    t0 = _log_ceiling(dtype)
    assert t0 == pytest.approx(T0[dtype])
    finfo = torch.finfo(dtype)
    for minus_one in (False, True):
        # value and slope continuous at t₀ (slope e^t₀ on both sides)
        t = torch.tensor([[t0 - 1e-3], [t0], [t0 + 1e-3]], dtype=torch.float64).to(dtype).requires_grad_(True)
        keep = torch.ones_like(t, dtype=torch.bool)
        out = _saturated_sum_exp(t, keep, minus_one)
        (g,) = torch.autograd.grad(out.sum(), t)
        e0 = math.exp(t0)
        assert out.tolist() == pytest.approx([e0 * math.exp(-1e-3) - minus_one, e0 - minus_one,
                                              e0 * (1 + math.log1p(1e-3)) - minus_one], rel=1e-5)
        assert g.flatten().tolist() == pytest.approx([e0 * math.exp(-1e-3), e0, e0 / (1 + 1e-3)], rel=1e-5)
        # increasing and finite out to the largest finite t, gradient in (0, e^t₀]
        grid = torch.tensor([0.0, 1.0, t0, t0 + 1, 2 * t0, 1e4, 1e10, 1e30, finfo.max], dtype=dtype)[:, None]
        grid = torch.cat([grid, torch.zeros_like(grid)], -1).requires_grad_(True)  # a second, zero term
        keep = torch.tensor([[True, True]] * len(grid))
        out = _saturated_sum_exp(grid, keep, minus_one)
        (g,) = torch.autograd.grad(out.sum(), grid)
        assert torch.isfinite(out).all() and torch.isfinite(g).all()
        assert (out[1:] >= out[:-1]).all() and (g[:, 0] > 0).all() and (g <= e0 * (1 + 1e-6)).all()
        assert float(out[-1].detach()) <= e0 * (2 + math.log(finfo.max))
    # a batch mean of 2^16 saturated rows of 18 terms stays finite in the dtype
    t = torch.full((2**16, A), finfo.max / 2, dtype=dtype)
    assert torch.isfinite(_saturated_sum_exp(t, torch.ones_like(t, dtype=torch.bool)).mean())


def test_every_registered_loss_is_covered_and_tabled():
    """Each registered loss is swept here, and the loss table (docs/losses.md) states its domain."""
    assert {n for n, _ in ALL_CASES} == set(LOSSES)
    page = (Path(__file__).resolve().parents[1] / "docs" / "losses.md").read_text()
    section = page[page.index("# Student losses"):]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    header = next(line for line in section.splitlines() if line.startswith("| name"))
    assert "finite" in header
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for name in LOSSES:
        row = next((r for r in rows if re.search(rf"`{re.escape(name)}`", r)), None)
        assert row is not None, name
        assert len(row.split(" | ")) == len(header.split(" | ")), row
