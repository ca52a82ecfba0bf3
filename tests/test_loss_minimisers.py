"""The minimisers of the student losses' expected loss (properness, as the table in docs/losses.md
states) and cc's logit scale (``logit_scale: auto``: curvature matched to cross-entropy at uniform).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amn.losses.library import get_loss
from loss_cases import A, _normalise, _targets, make_batch, minimise


PROPERNESS = [
    # name, options, q -> expected softmax(z*)
    ("ce", {}, lambda q: q),
    ("ce-brier", {}, lambda q: q),
    ("ce-brier", {"lam": 5.0}, lambda q: q),
    ("noel-m", {}, lambda q: _normalise(np.sqrt(q))),
    ("noel-param-m", {"alpha": 0.5}, lambda q: _normalise(q ** (1 / 1.5))),
    ("noel-param-m", {"alpha": 3.0}, lambda q: _normalise(q ** (1 / 4.0))),
]


@pytest.mark.parametrize("name, opts, expect", PROPERNESS, ids=[p[0] + str(p[1]) for p in PROPERNESS])
def test_minimiser_closed_form(name, opts, expect):
    for i, q in enumerate(_targets()):
        p, _ = minimise(name, opts, q, seed=i)
        np.testing.assert_allclose(p, expect(q), atol=1e-4)


def test_mse_logits_reproduces_softmax_of_values():
    for i, q in enumerate(_targets()):
        v = np.log(q) + 3.0  # any shift: softmax(v) = q is a τ = 1 target
        p, z = minimise("mse-logits", {}, q, seed=i, values=v)
        np.testing.assert_allclose(z, v, atol=1e-6)
        np.testing.assert_allclose(p, q, atol=1e-4)


def test_squentropy_flattens_documented_example():
    """Reference example q = (0.7, 0.2, 0.1) → p* ≈ (0.511, 0.254, 0.234), for the
    soft loss and the hard one under c ~ q; flatter than q for every K."""
    for name in ("squentropy-soft", "squentropy"):
        p, _ = minimise(name, {}, np.array([0.7, 0.2, 0.1]))
        np.testing.assert_allclose(p, [0.5111, 0.2544, 0.2345], atol=2e-4)
    for i, q in enumerate(_targets()):
        p, _ = minimise("squentropy-soft", {}, q, seed=i)
        assert p.max() < q.max() - 0.02 and p.min() > q.min()
        assert np.argmax(p) == np.argmax(q)


@pytest.mark.parametrize("opts", [{"soft": True}, {"soft": True, "M": 3.0}, {}, {"M": 3.0}, {"k": 2.0, "M": 2.0}])
def test_rescaled_square_reproduces_scaled_target_in_logits(opts):
    """Soft form and hard form (k = 1): z* = M q, so softmax(z*) = softmax(M q) ≠ q.
    Hard form with k ≠ 1: z*_i = k M q_i / (k q_i + 1 − q_i)."""
    k, m = opts.get("k", 1.0), opts.get("M", 1.0)
    for i, q in enumerate(_targets()):
        p, z = minimise("rescaled-square", opts, q, seed=i)
        z_expect = k * m * q / (k * q + 1 - q)
        np.testing.assert_allclose(z, z_expect, atol=1e-6)
        np.testing.assert_allclose(p, _normalise(np.exp(z_expect)), atol=1e-6)
        assert np.abs(p - q).max() > 1e-2  # not proper


def _stationarity(name: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """∂E/∂p_i of the expected loss Σ_c q_c ℓ(p; c); equal across i at an interior
    minimum on the simplex (Lagrange), derived by hand per loss."""
    if name == "noel-l":  # E = Σ q_i (p_i(2 − p_i))^{-1/2}
        return -q * (1 - p) / (p * (2 - p)) ** 1.5
    if name == "noel-m-full":  # E = Σ q_i/p_i + Σ (1 − q_i) p_i/(1 − p_i) − 1
        return -q / p**2 + (1 - q) / (1 - p) ** 2
    if name == "noel-l-full":  # E = Σ [q_i (p(2−p))^{-1/2} + (1 − q_i)(1 − p²)^{-1/2} − 1]
        return -q * (1 - p) / (p * (2 - p)) ** 1.5 + (1 - q) * p / (1 - p**2) ** 1.5
    raise KeyError(name)


@pytest.mark.parametrize("name", ["noel-l", "noel-m-full", "noel-l-full"])
def test_noel_distorted_minimiser_satisfies_lagrange(name):
    for i, q in enumerate(_targets()):
        p, _ = minimise(name, {}, q, seed=i)
        g = _stationarity(name, p, q)
        np.testing.assert_allclose(g, g.mean(), rtol=1e-4)
        assert np.abs(p - q).max() > 1e-2  # not proper
        assert np.argmax(p) == np.argmax(q)


@pytest.mark.parametrize("name", ["parabolic", "circle", "cos"])
def test_bounded_noel_losses_collapse_on_argmax(name):
    q = np.array([0.45, 0.35, 0.2])
    p, _ = minimise(name, {}, q, adam_steps=60)
    assert np.argmax(p) == 0 and p[0] > 0.99



# --------------------------------------------------------------------------- #
# cc's logit_scale: α·z into the CC; "auto" is α = K + 1 (curvature matched at uniform)
# --------------------------------------------------------------------------- #


def test_cc_logit_scale_auto_matches_softmax_curvature_at_uniform():
    """The loss's Hessian in z is α²·Cov_CC(αz); at z = 0 the CC is the flat Dirichlet, whose
    covariance is (I − 11ᵀ/K)/(K(K+1)). With α = K + 1 that is (K+1)/K·(I − 11ᵀ/K), i.e. the
    Hessian of cross-entropy on logits (K+1)·z: the same response per step of α·z as CE has per
    step of z. Checked by central differences of the gradient (h = 1e-4: error O(h²) ≈ 1e-8)."""
    h = 1e-4
    for k in (2, 4, 6, 18):
        mask = torch.zeros(1, A, dtype=torch.bool)
        mask[0, :k] = True
        target = torch.zeros(1, A, dtype=torch.float64)
        target[0, :k] = 1.0 / k
        loss = get_loss("cc", logit_scale="auto")

        def grad_at(z: torch.Tensor) -> torch.Tensor:
            z = z.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(loss(z, target, mask).loss.sum(), z)
            return g[0, :k]

        jac = []
        for i in range(k):
            step = torch.zeros(1, A, dtype=torch.float64)
            step[0, i] = h
            jac.append((grad_at(step) - grad_at(-step)) / (2 * h))
        centred = torch.eye(k, dtype=torch.float64) - 1.0 / k
        torch.testing.assert_close(torch.stack(jac), (k + 1) / k * centred, atol=1e-6, rtol=0)


@pytest.mark.parametrize("q", [[0.7, 0.3], [0.3, 0.2, 0.15, 0.15, 0.1, 0.1], [0.4, 0.3, 0.1, 0.1, 0.05, 0.05]])
def test_cc_logit_scale_auto_minimiser_softmax_is_close_to_target(q):
    """Claimed: the expected loss's minimiser has μ(α z*) = q exactly, and softmax(z*) = q + O(t²)
    along q_t = 1/K + t·(q − 1/K) (the curvatures match at uniform, so the first order agrees):
    halving t at least quarters the error (measured ratios 3.5–3.9 for K = 6 at t = 0.1…0.025). Plain cc's softmax(z*) is far sharper than q."""
    q = np.array(q)
    k = len(q)
    errors = []
    for t in (0.1, 0.05, 0.025):
        qt = 1 / k + t * (q - 1 / k)
        p_auto, z_auto = minimise("cc", {"logit_scale": "auto"}, qt)
        errors.append(np.abs(p_auto - qt).max())
        assert np.argmax(p_auto) == np.argmax(qt)
        if t == 0.1:
            p_plain, _ = minimise("cc", {}, qt)
            assert np.abs(p_plain - qt).max() > 4 * errors[0]
            # exactly: the CC mean at α z* is q (the minimiser of an exponential family's expected loss)
            mask = torch.zeros(1, A, dtype=torch.bool)
            mask[0, :k] = True
            eta = torch.zeros(1, A, dtype=torch.float64)
            eta[0, :k] = torch.tensor(z_auto) * (k + 1)
            eta.requires_grad_(True)
            from amn.losses import cc_log_normaliser

            # log E(η) = logsumexp(η) − log C; its gradient is the CC mean μ(η)
            log_e = torch.logsumexp(eta[mask].view(1, -1), -1) - cc_log_normaliser(eta, mask=mask)
            (mu,) = torch.autograd.grad(log_e.sum(), eta)
            np.testing.assert_allclose(mu[0, :k].numpy(), qt, atol=1e-6)
    for coarse, fine in zip(errors, errors[1:]):
        # at least second order: the ratio tends to 4 (K = 2: 8, its odd terms vanish by symmetry)
        assert coarse / fine >= 3.5, errors


def test_cc_logit_scale_gradcheck_and_options():
    logits, target, mask, _ = make_batch(11)
    z = logits.double().detach().requires_grad_(True)
    for scale in ("auto", 2.5):
        loss = get_loss("cc", logit_scale=scale)
        assert torch.autograd.gradcheck(lambda x: loss(x, target.double(), mask).loss, (z,), eps=1e-6, atol=1e-6)
    # α = 1 is plain cc, bit for bit
    torch.testing.assert_close(get_loss("cc", logit_scale=1.0)(z, target, mask).loss, get_loss("cc")(z, target, mask).loss,
                               rtol=0, atol=0)
    for bad in (0, -1.0, float("inf"), "K+1", True):
        with pytest.raises(ValueError, match="logit_scale"):
            get_loss("cc", logit_scale=bad)


def test_guarded_normaliser_accurate_over_the_scaled_range():
    """With α = K + 1 the CC sees logits ~7× wider (Pong, K = 6): students' logit spreads up to ~30
    become up to ~210. The guarded normaliser stays at float64 rounding there (mpmath reference)."""
    from cc_reference import log_normaliser

    from amn.losses import cc_log_normaliser

    gen = torch.Generator().manual_seed(3)
    for spread in (1.0, 30.0, 100.0, 210.0):
        z = torch.rand(16, 6, generator=gen, dtype=torch.float64) * spread
        z[::4, 2] = z[::4, 1] + 1e-9  # near ties (the reference's closed form cannot take exact ones)
        zg = z.clone().requires_grad_(True)
        got = cc_log_normaliser(zg)
        (grad,) = torch.autograd.grad(got.sum(), zg)
        refs = [log_normaliser(row.tolist()) for row in z]
        ref = torch.tensor([r[0] for r in refs], dtype=torch.float64)
        ref_grad = torch.tensor([r[1] for r in refs], dtype=torch.float64)
        # the module's documented float64 accuracy: value 1e-13 relative, gradient 1e-12
        torch.testing.assert_close(got.detach(), ref, rtol=1e-13, atol=0)
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12)
