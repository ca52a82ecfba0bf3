"""Tests for the student losses (amn.losses: library, likelihood, square, noel): interface, formulas,
masking, gradients, validation, cc's normaliser dispatch, and finite values over spreads.

Minimisers (properness) and cc's logit scale are in tests/test_loss_minimisers.py; the shared cases
and reference formulas in tests/loss_cases.py.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from amn.losses.library import LOSSES, get_loss
from loss_cases import A, ALL_NAMES, CASE_IDS, CASES, call, make_batch, minimise, ref_row

# --------------------------------------------------------------------------- #
# Registry and interface
# --------------------------------------------------------------------------- #


def test_registry_names_and_flags():
    assert sorted(LOSSES) == sorted(ALL_NAMES)
    proper = {n for n, cls in LOSSES.items() if cls.proper}
    assert proper == {"ce", "ce-brier", "mse-logits"}
    assert [n for n, cls in LOSSES.items() if cls.needs_expert_values] == ["mse-logits"]
    for n, cls in LOSSES.items():
        doc = (cls.__doc__ or "").lower()
        assert cls.name == n
        assert "proper" in doc and "shapes" in doc and "minimis" in doc, n


def test_get_loss_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="unknown loss 'kl'.*valid losses: cc, ce, ce-brier"):
        get_loss("kl")


@pytest.mark.parametrize(
    "name, opts, pattern",
    [
        ("ce", {"lam": 1.0}, "unknown option.*lam; valid options: logit_scale"),
        ("squentropy", {"lam": 1.0}, "unknown option.*lam; valid options: none"),
        ("noel-param-m", {"beta": 1.0}, "unknown option.*beta; valid options: alpha"),
        ("rescaled-square", {"m": 1.0}, "valid options: k, M, soft"),
        ("noel-param-m", {"alpha": 0.0}, "alpha=0.0 must be a finite number > 0"),
        ("noel-param-m", {"alpha": -1.0}, "alpha=-1.0 must be"),
        ("ce-brier", {"lam": -0.1}, "lam=-0.1 must be a finite number >= 0"),
        ("rescaled-square", {"M": float("nan")}, "M=nan must be"),
        ("rescaled-square", {"soft": True, "k": 2.0}, "soft=True .* needs k=1"),
        ("cc", {"normaliser": "exact"}, "normaliser='exact'.*guarded, naive, authors"),
    ],
)
def test_get_loss_bad_options(name, opts, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_loss(name, **opts)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_shape_and_rows(dtype):
    logits, target, mask, values = make_batch(0, dtype=dtype)
    for name, opts in CASES:
        # A target in another dtype is accepted and cast to the logits' dtype.
        out = call(name, opts, logits, target.double(), mask, values)
        assert out.loss.dtype == dtype and out.loss.shape == (6,)
        assert out.diagnostics == {"rows": 6}


# --------------------------------------------------------------------------- #
# Formulas
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("name, opts", CASES, ids=CASE_IDS)
def test_matches_formula_mixed_k(name, opts, dtype, rtol):
    logits, target, mask, values = make_batch(1, ks=(4, 6, 18, 2, 9, 4, 6, 18), dtype=dtype)
    got = call(name, opts, logits, target, mask, values).loss.double().numpy()
    ln, tn, vn, mn = logits.double().numpy(), target.double().numpy(), values.double().numpy(), mask.numpy()
    want = [ref_row(name, opts, ln[r, mn[r]], tn[r, mn[r]], vn[r, mn[r]]) for r in range(len(mn))]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def _mp_noel(name: str, z: list[float], c: int) -> float:
    """Noel losses in 50-digit arithmetic, for the near-saturated rows."""
    mp.mp.dps = 50
    zz = [mp.mpf(x) for x in z]
    s = mp.fsum(mp.e**x for x in zz)
    p = [mp.e**x / s for x in zz]
    pc = p[c]
    if name == "noel-m-full":
        return float(1 / pc - 1 + mp.fsum(1 / (1 - p[i]) - 1 for i in range(len(z)) if i != c))
    if name == "noel-l-full":
        return float(1 / mp.sqrt(pc * (2 - pc)) - 1
                     + mp.fsum(1 / mp.sqrt(1 - p[i] ** 2) - 1 for i in range(len(z)) if i != c))
    f = {"noel-m": lambda: 1 / pc - 1, "noel-l": lambda: 1 / mp.sqrt(pc * (2 - pc)),
         "parabolic": lambda: 1 - pc**2, "circle": lambda: mp.sqrt(1 - pc**2),
         "cos": lambda: mp.cos(mp.pi * pc / 2)}[name]
    return float(f())


@pytest.mark.parametrize("name", ["noel-m", "noel-m-full", "noel-l", "noel-l-full",
                                  "parabolic", "circle", "cos"])
@pytest.mark.parametrize("dtype, gap, rtol", [(torch.float64, 40.0, 1e-9), (torch.float32, 20.0, 1e-4)])
def test_noel_stable_when_saturated(name, dtype, gap, rtol):
    """p_c (or a wrong action's p_i) within eps of 1: 1 − p must not round to 0."""
    mask = torch.zeros(2, A, dtype=torch.bool)
    mask[:, :4] = True
    z = torch.zeros(2, A, dtype=dtype)
    z[0, 0] = gap  # expert's action saturated: p_c -> 1
    z[1, 1] = gap  # a wrong action saturated: p_1 -> 1, p_c tiny
    target = torch.zeros(2, A, dtype=dtype)
    target[:, 0] = 1.0
    got = get_loss(name)(z, target, mask).loss.double().numpy()
    want = [_mp_noel(name, z[r, :4].tolist(), 0) for r in range(2)]
    np.testing.assert_allclose(got, want, rtol=rtol)


@pytest.mark.parametrize("name", ["parabolic", "circle", "cos"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bounded_noel_losses_finite_for_any_spread(name, dtype):
    mask = torch.zeros(2, A, dtype=torch.bool)
    mask[:, :3] = True
    z = torch.zeros(2, A, dtype=dtype)
    z[0, 0], z[1, 1] = 1e4, 1e4  # expert's action certain / impossible
    target = torch.zeros(2, A, dtype=dtype)
    target[:, 0] = 1.0
    z.requires_grad_(True)
    out = get_loss(name)(z, target, mask).loss
    out.sum().backward()
    assert out.tolist() == [0.0, 1.0] and torch.isfinite(z.grad).all()


def test_squentropy_soft_is_expected_hard():
    """Σ_c q_c squentropy(z; c) equals squentropy-soft(z; q); same for rescaled-square
    (k = 1) up to the constant (M²/K) Σ q_i (1 − q_i)."""
    logits, target, mask, _ = make_batch(2, ks=(5,))
    idx = mask[0].nonzero().squeeze(-1)
    hard = lambda n, **o: sum(  # noqa: E731
        target[0, i] * get_loss(n, **o)(logits, torch.nn.functional.one_hot(i, A)[None].double(), mask).loss[0]
        for i in idx
    )
    soft = get_loss("squentropy-soft")(logits, target, mask).loss[0]
    torch.testing.assert_close(hard("squentropy"), soft, rtol=1e-12, atol=1e-12)
    q = target[0, idx]
    const = 4.0 * (q * (1 - q)).sum() / 5
    rs_soft = get_loss("rescaled-square", soft=True, M=2.0)(logits, target, mask).loss[0]
    torch.testing.assert_close(hard("rescaled-square", M=2.0), rs_soft + const, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- #
# Masking
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name, opts", CASES, ids=CASE_IDS)
def test_invalid_logits_have_no_influence(name, opts):
    logits, target, mask, values = make_batch(3)
    junk = logits.clone()
    junk[~mask] = torch.tensor([1e30, -1e30, math.nan, math.inf, -math.inf, 7.0], dtype=junk.dtype).repeat(A)[
        : int((~mask).sum())
    ]
    vjunk = values.clone()
    vjunk[~mask] = math.nan  # mse-logits must ignore invalid expert values too
    grads, losses = [], []
    for lg, vv in ((logits, values), (junk, vjunk)):
        lg = lg.clone().requires_grad_(True)
        out = call(name, opts, lg, target, mask, vv).loss
        out.sum().backward()
        losses.append(out.detach())
        grads.append(lg.grad)
    assert torch.equal(losses[0], losses[1])
    assert torch.equal(grads[0], grads[1])
    assert torch.all(grads[1][~mask] == 0)
    assert torch.isfinite(grads[1]).all()


# --------------------------------------------------------------------------- #
# Gradients
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name, opts", CASES, ids=CASE_IDS)
def test_gradcheck(name, opts):
    """float64 gradcheck w.r.t. the valid logits (and expert values); invalid
    slots are covered by the masking test, and leaving them out keeps this fast."""
    logits, target, mask, values = make_batch(4, ks=(2, 4, 6), scale=1.5)
    loss = get_loss(name, **opts)

    def fill(base: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return base.masked_scatter(mask, valid)

    z = logits[mask].clone().requires_grad_(True)
    if loss.needs_expert_values:
        v = values[mask].clone().requires_grad_(True)
        fn = lambda z, v: loss(fill(logits, z), target, mask, fill(values, v)).loss  # noqa: E731
        assert torch.autograd.gradcheck(fn, (z, v))
    else:
        assert torch.autograd.gradcheck(lambda z: loss(fill(logits, z), target, mask).loss, (z,))


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #


def _valid64():
    logits, target, mask, values = make_batch(6, ks=(4, 6, 18) * 21 + (4,))  # 64 rows
    return logits, target, mask, values


def test_validation_target_sum_message():
    logits, target, mask, _ = _valid64()
    target[[1, 5, 9]] *= 1.2
    with pytest.raises(ValueError) as e:
        get_loss("ce")(logits, target, mask)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("target: 3 of 64 rows do not sum to 1 over the valid actions (max error 0.2)")
    assert "softmax(expert_values / temperature)" in msg


def test_validation_sum_tolerance():
    logits, target, mask, _ = _valid64()
    get_loss("ce")(logits, target * (1 + 5e-5), mask)  # within 1e-4: accepted
    with pytest.raises(ValueError, match="1 of 64 rows do not sum to 1"):
        target[0] *= 1 + 5e-4
        get_loss("ce")(logits, target, mask)


@pytest.mark.parametrize(
    "corrupt, pattern",
    [
        (lambda l, t, m: (l[:, :5], t, m), r"shapes: logits \[64, 5\], target \[64, 18\], mask \[64, 18\] must all be \[B, A\]"),
        (lambda l, t, m: (l[0], t[0], m[0]), r"shapes: logits \[18\]"),
        (lambda l, t, m: (l, t, m.float()), "mask: dtype torch.float32, expected torch.bool"),
        (lambda l, t, m: (l.long(), t, m), "logits: dtype torch.int64"),
        (lambda l, t, m: (l, (t > 0.5).long(), m), "target: dtype torch.int64"),
        (lambda l, t, m: (l, t, _with(m, [[0, slice(None)]], False)), "mask: 1 of 64 rows have fewer than 2 valid actions"),
        (lambda l, t, m: (_at_valid(l, m, [2, 3], math.nan), t, m), "logits: 2 of 64 rows have NaN or inf at valid actions"),
        (lambda l, t, m: (_at_valid(l, m, [7], -math.inf), t, m), "logits: 1 of 64 rows have NaN or inf"),
        (lambda l, t, m: (l, _at_valid(t, m, [4], math.nan), m), "target: 1 of 64 rows contain NaN or inf"),
        (lambda l, t, m: (l, _negate_one(t, m), m), r"target: 1 of 64 rows have negative entries \(min -"),
        (lambda l, t, m: (l, _leak(t, m), m), r"target: 1 of 64 rows put mass on actions outside the mask \(max 0.5\)"),
    ],
)
def test_validation_errors(corrupt, pattern):
    logits, target, mask, _ = _valid64()
    l2, t2, m2 = corrupt(logits.clone(), target.clone(), mask.clone())
    for name in ("ce", "noel-m", "squentropy"):  # one shared validator for all
        with pytest.raises(ValueError, match=pattern):
            get_loss(name)(l2, t2, m2)


def _with(x, index, value):
    for idx in index:
        x[tuple(idx)] = value
    return x


def _at_valid(x, mask, rows, value):
    for r in rows:
        x[r, mask[r].nonzero()[0, 0]] = value
    return x


def _negate_one(t, mask):
    i, j = mask[0].nonzero()[:2, 0]
    t[0, j] += t[0, i] + 0.1  # keep the sum at 1 so only the sign is wrong
    t[0, i] = -0.1
    return t


def _leak(t, mask):
    t[0] *= 0.5
    t[0, (~mask[0]).nonzero()[0, 0]] = 0.5
    return t


def test_validation_ignores_nonfinite_invalid_logits():
    logits, target, mask, _ = _valid64()
    logits[~mask] = math.nan
    assert torch.isfinite(get_loss("ce")(logits, target, mask).loss).all()


def test_mse_logits_needs_finite_expert_values():
    logits, target, mask, values = _valid64()
    with pytest.raises(ValueError, match="mse-logits needs expert_values"):
        get_loss("mse-logits")(logits, target, mask)
    values = _at_valid(values, mask, [0, 1, 2], math.inf)
    with pytest.raises(ValueError, match="expert_values: 3 of 64 rows have NaN or inf"):
        get_loss("mse-logits")(logits, target, mask, expert_values=values)
    with pytest.raises(ValueError, match=r"shapes: .*expert_values \[64, 4\]"):
        get_loss("mse-logits")(logits, target, mask, expert_values=values[:, :4])


# --------------------------------------------------------------------------- #
# cc: dispatch (monkeypatched) and one real call
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("normaliser", ["guarded", "naive", "authors"])
def test_cc_dispatches_with_normaliser(monkeypatch, normaliser):
    import amn.losses.cc as cc_mod

    seen = {}

    def fake(logits, target, mask, normaliser):
        seen.update(normaliser=normaliser, shape=tuple(logits.shape))
        return logits.sum(-1) * 0.0, {"fallback_rows": 2, "rows": 999}

    monkeypatch.setattr(cc_mod, "cc_loss", fake)
    logits, target, mask, _ = make_batch(7)
    out = get_loss("cc", normaliser=normaliser)(logits, target, mask)
    assert seen == {"normaliser": normaliser, "shape": (6, A)}
    assert out.diagnostics == {"fallback_rows": 2, "rows": 6}
    with pytest.raises(ValueError, match="do not sum to 1"):  # validated before dispatch
        get_loss("cc")(logits, target * 2, mask)
    assert get_loss("cc").normaliser == "guarded"


def test_cc_real_finite_on_tied_logits():
    _, target, mask, _ = make_batch(9)
    logits = torch.zeros(6, A, dtype=torch.float64, requires_grad=True)
    out = get_loss("cc")(logits, target, mask)
    out.loss.sum().backward()
    assert torch.isfinite(out.loss).all() and torch.isfinite(logits.grad).all()
    assert out.diagnostics["rows"] == 6


def test_cc_minimiser_matches_mean_not_lambda():
    """Documented non-properness: q = (0.7, 0.3) → λ* ≈ (0.935, 0.065) (the CC mean is q)."""
    p, _ = minimise("cc", {}, np.array([0.7, 0.3]))
    np.testing.assert_allclose(p, [0.93536, 0.06464], atol=1e-3)


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #


@st.composite
def rows(draw, spread: float = 50.0):
    """One row: K valid actions at the first K slots, logits with spread ≤ `spread`."""
    k = draw(st.integers(2, A))
    z = draw(st.lists(st.floats(0.0, spread), min_size=k, max_size=k))
    w = draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k).filter(lambda w: sum(w) > 1e-3))
    q = np.array(w) / sum(w)
    logits = torch.zeros(1, A, dtype=torch.float64)
    logits[0, :k] = torch.tensor(z) - 25.0
    target = torch.zeros(1, A, dtype=torch.float64)
    target[0, :k] = torch.tensor(q)
    mask = torch.zeros(1, A, dtype=torch.bool)
    mask[0, :k] = True
    return logits, target, mask


@settings(max_examples=60, deadline=None)
@given(rows())
def test_ce_at_least_target_entropy(row):
    logits, target, mask = row
    q = target[mask]
    entropy = -(q[q > 0] * q[q > 0].log()).sum()
    assert get_loss("ce")(logits, target, mask).loss[0] >= entropy - 1e-9


# ParamM with α > 1 overflows earlier: finite only while α·(−log p_c) < 88 in float32.
FINITE_CASES = [(n, o) for n, o in CASES if o.get("alpha", 1.0) <= 1.0]
BOUNDS = {"noel-l": (1.0, math.inf), "parabolic": (0.0, 1.0), "circle": (0.0, 1.0), "cos": (0.0, 1.0)}


@settings(max_examples=40, deadline=None)
@given(rows(), st.sampled_from([torch.float32, torch.float64]))
def test_all_losses_finite_with_spread_up_to_50(row, dtype):
    logits, target, mask = (x.to(dtype) if x.is_floating_point() else x for x in row)
    for name, opts in FINITE_CASES:
        z = logits.clone().requires_grad_(True)
        loss = call(name, opts, z, target, mask, logits).loss
        loss.sum().backward()
        assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all(), name
        lo, hi = BOUNDS.get(name, (0.0, math.inf))
        assert lo - 1e-6 <= float(loss.detach()) <= hi + 1e-6, name

