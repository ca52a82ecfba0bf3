"""The continuous-categorical (CC) normaliser C(λ) and the CC-AMN loss.

For logits z over K valid actions and λ = softmax(z) the CC density on the
simplex is p(x; λ) = C(λ) Π_k λ_k^{x_k}, and

    log C(λ) = logsumexp(z) − log exp[z_1, ..., z_K]

where exp[z_1..z_K] is the divided difference of exp at the nodes z
(Hermite–Genocchi: the integral of e^{z·x} over the simplex). log C is shift
and permutation invariant, and log C ≥ log K! with equality exactly at uniform λ
(``tests/test_cc_normaliser.py`` checks each of these).

Three methods, selected with ``method=``:

``"guarded"`` (default)
    Method: float64 internally, whatever the input dtype; three paths per row,
    none of which subtracts large quantities:

    - series (spread = max − min valid logit ≤ 24, unless the closed form
      certifies first): the first row of exp(diag(z − min z) + N), N the
      superdiagonal shift, by its Taylor series in Horner form — every term is
      ≥ 0 — in a compiled loop with a hand-written exact adjoint
      (:mod:`amn.losses._series`, numba);
    - closed form (spread > 6, value and gradient certified): Σ_k t_k. Value:
      cancellation ratio κ = Σ|t_k| / Σ t_k ≤ 20. Gradient: γ_{4K+8} (κ_∇ + κ)
      ≤ 1e-12, κ_∇ = max_j G_j / Σ t_k, G_j = Σ |parts autograd adds into
      ∂/∂z_j| (t_j, t_k / (z_k − z_j)): a rounding-error bound, derived in
      ``_closed_form_certified``. κ alone misses near ties below the maximum,
      e.g. [0, −30, −30 − 1e-12]: value right, gradient off by 6e-4;
    - table (the rest: wide and uncertified): the Opitz table exp(diag(z) + N),
      whose (1, K) entry is exp[z_1..z_K], by scaling and squaring of matrices
      with positive entries; the maximum node is moved to 0 first, so nothing
      overflows for spreads below ~1400.

    Accuracy (``tests/test_cc_normaliser.py``, against a 50-digit mpmath
    reference on adversarial rows, K = 2..18, spreads up to 1000, and float64
    near ties, gaps 1e-13..1e-6, at depths 25..35 and spreads up to 200):
    float64 relative error of log C ≤ 1e-13, gradient error ≤ 1e-12 (observed
    ≤ 3e-15 and ≤ 1e-14); float32 in/out ≤ 1e-6 (observed ≤ 6e-8). On the
    closed-form path the gradient bound is a certificate (worst-case rounding
    analysis, inputs taken as exact); on the other two it is measured.
    Domain: finite logits, 2 ≤ K, spread ≤ 1000 (tested; finite beyond).
``"naive"``
    The paper's closed form Σ_k e^{η_k} / Π_{i≠k} (η_k − η_i), η = z − z_K,
    in the input dtype with no guard. Exact ties give inf, near ties NaN or
    wrong values. It exists to show that failure.
``"authors"``
    What cunningham-lab/cb_and_cc does: float32, η divided by its standard
    deviation before the closed form. See :func:`cc_loss` for the rows it sends
    to cross-entropy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

METHODS = ("guarded", "naive", "authors")

#: Closed-form rows are trusted only below this cancellation ratio of the value (float64).
KAPPA_MAX = 20.0
#: The documented float64 gradient bound; closed-form rows must certify it (see _closed_form_certified).
GRAD_TOL = 1e-12
#: float64 unit roundoff u = 2^-53.
UNIT_ROUNDOFF = 2.0**-53
#: Scaled nodes lie in [0, DELTA]; Taylor terms beyond (K − 1) + TAYLOR_EXTRA are < 1e-17.
DELTA = 0.5
TAYLOR_EXTRA = 14
#: Rows wider than this try the closed form first (narrower ones rarely certify, and the series is cheap there).
CLOSED_FORM_MIN_SPREAD = 6.0
#: Rows up to this spread (max − min logit) use the series; wider ones the closed form if it
#: certifies, else the squaring table (the series' cost grows with the spread, the table's with its log).
SERIES_MAX_SPREAD = 24.0
#: A naive value further than this (relative) from the guarded one counts as wrong.
WRONG_TOLERANCE = 1e-2


def _check(logits: Tensor, mask: Tensor | None) -> Tensor:
    if not torch.is_floating_point(logits):
        raise ValueError(f"logits must be a floating tensor, got {logits.dtype}")
    if logits.dim() < 1:
        raise ValueError("logits must have at least one dimension (the actions)")
    if mask is None:
        mask = torch.ones_like(logits, dtype=torch.bool)
    elif mask.shape != logits.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool tensor of the logits' shape {tuple(logits.shape)}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    rows = logits.numel() // max(logits.shape[-1], 1)
    few = (mask.sum(-1) < 2).sum().item()
    if few:
        raise ValueError(f"logits: {few} of {rows} rows have fewer than 2 valid actions; "
                         "the CC distribution needs K >= 2")
    bad = (~torch.isfinite(logits) & mask).any(-1).sum().item()
    if bad:
        raise ValueError(f"logits: {bad} of {rows} rows contain inf or NaN among valid actions; "
                         "the student diverged upstream (lower the learning rate or check the inputs)")
    return mask


def cc_log_normaliser(
    logits: Tensor,
    *,
    method: str = "guarded",
    mask: Tensor | None = None,
    diagnostics: dict[str, int] | None = None,
) -> Tensor:
    """log C(λ) for λ = softmax(logits) over the valid actions of the last dimension.

    Args:
        logits: ``[..., K]`` float tensor.
        method: ``"guarded"``, ``"naive"`` or ``"authors"`` (module docstring).
        mask: optional bool ``[..., K]``, True for valid actions (each row ≥ 2).
        diagnostics: if a dict is given, counts for this call are added to it:
            ``rows``, ``ill_conditioned_rows`` (rows the naive closed form gets
            wrong by > 1 % or non-finite), ``closed_form_rows``, ``table_rows``
            (guarded paths) and ``nonfinite_rows`` (of the returned value).

    Returns:
        ``[...]`` tensor of log C, same dtype as ``logits``, differentiable.
    """
    if method not in METHODS:
        raise ValueError(f"unknown CC normaliser method {method!r}; choose one of: {', '.join(METHODS)}")
    mask = _check(logits, mask)
    batch_shape = logits.shape[:-1]
    z = logits.reshape(-1, logits.shape[-1])
    m = mask.reshape(z.shape)
    paths: dict[str, int] = {}
    if method == "guarded":
        out = _guarded(z, m, paths)
    elif method == "naive":
        out = _naive(z, m)
    else:
        out = _authors(z, m)
    if diagnostics is not None:
        with torch.no_grad():
            reference = out.detach() if method == "guarded" else _guarded(z.detach(), m, {})
            naive = out.detach() if method == "naive" else _naive(z.detach(), m)
            wrong = ~torch.isfinite(naive) | ((naive - reference).abs() > WRONG_TOLERANCE * reference.abs().clamp(min=1.0))
        _add(diagnostics, rows=z.shape[0], ill_conditioned_rows=int(wrong.sum()),
             nonfinite_rows=int((~torch.isfinite(out.detach())).sum()), **paths)
    return out.reshape(batch_shape)


def _add(diagnostics: dict[str, int], **counts: int) -> None:
    for key, value in counts.items():
        diagnostics[key] = diagnostics.get(key, 0) + int(value)


def _masked_logsumexp(z: Tensor, m: Tensor) -> Tensor:
    return torch.logsumexp(z.masked_fill(~m, -math.inf), dim=-1)


# ---------------------------------------------------------------- naive / authors


def _closed_form_terms(eta: Tensor, m: Tensor, numerator: Tensor | None = None) -> Tensor:
    """t_k = e^{η_k} / Π_{i≠k, valid} (η_k − η_i) for valid k, 0 elsewhere; ``[N, K]``.

    ``numerator`` replaces e^{η_k} (the authors' code divides λ_k instead).
    """
    diff = eta.unsqueeze(-1) - eta.unsqueeze(-2)  # [N, k, i] = η_k − η_i
    skip = ~(m.unsqueeze(-1) & m.unsqueeze(-2)) | torch.eye(eta.shape[-1], dtype=torch.bool, device=eta.device)
    denom = diff.masked_fill(skip, 1.0).prod(-1)
    top = torch.exp(eta) if numerator is None else numerator
    return torch.where(m, top / denom, torch.zeros_like(eta))


def _last_valid(z: Tensor, m: Tensor) -> Tensor:
    index = (m.long() * torch.arange(1, z.shape[-1] + 1, device=z.device)).argmax(-1, keepdim=True)
    return z.gather(-1, index)


def _naive(z: Tensor, m: Tensor) -> Tensor:
    eta = (z - _last_valid(z, m)).masked_fill(~m, 0.0)
    return _masked_logsumexp(eta, m) - torch.log(_closed_form_terms(eta, m).sum(-1))


def _authors(z: Tensor, m: Tensor) -> Tensor:
    # As cc_funcs.cc_log_norm_const: float32, η rescaled by its (population)
    # standard deviation, which is held constant for the gradient.
    z32 = z.float()
    eta = (z32 - _last_valid(z32, m)).masked_fill(~m, 0.0)
    k = m.sum(-1, keepdim=True)
    free = m.clone()
    free.scatter_(-1, (m.long() * torch.arange(1, z.shape[-1] + 1, device=m.device)).argmax(-1, keepdim=True), False)
    n_free = (k - 1).to(eta.dtype)
    mean = (eta * free).sum(-1, keepdim=True) / n_free
    sd = (((eta - mean) * free) ** 2).sum(-1, keepdim=True).div(n_free).sqrt().detach()
    lam = torch.softmax(eta.masked_fill(~m, -math.inf), -1)
    total = _closed_form_terms(eta / sd, m, numerator=lam).sum(-1)
    log_c = -torch.log(total) + (k.squeeze(-1) - 1).to(eta.dtype) * torch.log(sd.squeeze(-1))
    return log_c.to(z.dtype)


# ---------------------------------------------------------------- guarded


def _guarded(z: Tensor, m: Tensor, paths: dict[str, int]) -> Tensor:
    z64 = z.to(torch.float64)
    # log C is shift invariant, so the shift carries no gradient: detached, it cannot add
    # −Σ_j (every component's rounding error) to the maximum's component.
    zmax = z64.detach().masked_fill(~m, -math.inf).amax(-1, keepdim=True)
    shifted = (z64 - zmax).masked_fill(~m, 0.0)  # valid entries ≤ 0
    log_dd = torch.empty(z.shape[0], dtype=torch.float64, device=z.device)

    with torch.no_grad():
        spread = -shifted.masked_fill(~m, math.inf).amin(-1)
        closed = torch.zeros_like(spread, dtype=torch.bool)
        wide = (spread > CLOSED_FORM_MIN_SPREAD).nonzero().squeeze(-1)
        if wide.numel():  # the series' cost grows with the spread: try the closed form first
            closed[wide] = _closed_form_certified(shifted[wide], m[wide])
        series = ~closed & (spread <= SERIES_MAX_SPREAD)
    for name, rows, fn in (("series_rows", series, _log_dd_series),
                           ("closed_form_rows", closed, _log_dd_closed),
                           ("table_rows", ~closed & ~series, _log_dd_table)):
        index = rows.nonzero().squeeze(-1)
        if index.numel():
            log_dd = log_dd.index_put((index,), fn(shifted[index], m[index]))
        _add(paths, **{name: index.numel()})
    return (_masked_logsumexp(shifted, m) - log_dd).to(z.dtype)


def _closed_form_certified(x: Tensor, m: Tensor) -> Tensor:
    """Rows whose closed-form value *and* gradient are certified; ``x`` ``[N, K]`` float64, max 0.

    Value: κ = Σ|t_k| / Σ t_k ≤ KAPPA_MAX. Gradient: autograd of log Σ t_k gives
    ∂/∂x_j = g_j / D, D = Σ t_k, where g_j is the sum of the 2K − 1 parts
        t_j,   −t_j / (x_j − x_i) (i ≠ j),   t_k / (x_k − x_j) (k ≠ j)
    (exp, then prod and div backward; the diff matrix sends each 1/(x_k − x_i) to
    both nodes). A near tie x_j ≈ x_i makes two parts ~ t/gap of opposite sign
    that cancel to O(t): κ, a ratio of the t_k alone, cannot see it.

    Bound, nodes x taken as exact (the shift to max 0 perturbs the input by
    ≤ u|x|, the same for every path). Each difference is exact (Sterbenz) or has
    relative error ≤ u; each t_k carries ≤ 2K roundings (K − 1 differences, K − 2
    products, exp ≤ 2u, one division), its backward ≤ 6 more (div: 3, prod: 2,
    exp: 1), the sums over 2K − 1 parts ≤ 2K − 1, and 1/D̂ and softmax − μ one
    each: every ĝ_j is within γ_n G_j of g_j, n = 4K + 8 (Higham, Accuracy and
    Stability, §3.1, 4.2), G_j = Σ |parts of g_j|. D̂ = D(1 + δ), |δ| ≤ γ_n κ, and
    μ_j = g_j / D ∈ (0, 1), so to first order

        |ĝ_j / D̂ − μ_j| ≤ γ_n (G_j / D + μ_j κ) ≤ γ_n (κ_∇ + κ),   κ_∇ = max_j G_j / D.

    (The shift to max 0 is detached in :func:`_guarded`, so no component collects
    the others' errors.) The row certifies when γ_n (κ_∇ + κ) ≤ GRAD_TOL, the
    documented gradient bound; the softmax half of ∇ log C adds a few u. G_j
    needs no new products: G_j = |t_j| (1 + Σ_i r_ji) + Σ_k |t_k| r_kj with
    r_ki = 1 / |x_k − x_i|, computed only for rows that pass κ (few, for large K).
    """
    eye = torch.eye(x.shape[-1], dtype=torch.bool, device=x.device)
    pair = m.unsqueeze(-1) & m.unsqueeze(-2) & ~eye
    diff = x.unsqueeze(-1) - x.unsqueeze(-2)  # [N, k, i] = x_k − x_i
    t = torch.where(m, torch.exp(x) / diff.masked_fill(~pair, 1.0).prod(-1), torch.zeros_like(x))
    total = t.sum(-1)
    size = t.abs()
    # Exact ties give ±inf terms and a NaN total, which compares False: the row goes elsewhere.
    certified = torch.isfinite(total) & (total > 0) & (size.sum(-1) <= KAPPA_MAX * total)
    rows = certified.nonzero().squeeze(-1)
    if rows.numel():
        size, total = size[rows], total[rows]
        inv_gap = diff[rows].abs_().reciprocal_().masked_fill_(~pair[rows], 0.0)  # symmetric: r_ki = r_ik
        parts = size * (1.0 + inv_gap.sum(-1)) + torch.bmm(inv_gap, size.unsqueeze(-1)).squeeze(-1)
        n = 4.0 * m[rows].sum(-1).to(x.dtype) + 8.0
        gamma = n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)
        certified[rows] = gamma * (parts.amax(-1) + size.sum(-1)) <= GRAD_TOL * total
    return certified


def _log_dd_closed(x: Tensor, m: Tensor) -> Tensor:
    """log exp[x_valid] from the closed form; only for rows :func:`_closed_form_certified` passed."""
    return torch.log(_closed_form_terms(x, m).sum(-1))


def _front(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Valid nodes moved to the front, the rest set to the row minimum; also k per row.

    For an upper-triangular A the leading k×k block of exp(A) is exp of A's
    leading block, so entry (1, k) sees only the k valid nodes whatever fills
    the rest, and filling with the minimum adds no spread.
    """
    order = torch.sort((~m).to(torch.int8), dim=-1, stable=True).indices
    x, valid = x.gather(-1, order), m.gather(-1, order)
    k = valid.sum(-1)
    x, valid = x[:, : int(k.max())], valid[:, : int(k.max())]
    xmin = x.masked_fill(~valid, math.inf).amin(-1, keepdim=True)
    return torch.where(valid, x, xmin), xmin, k


class _Series(torch.autograd.Function):
    """log exp[x_valid] per row by the compiled series of :mod:`amn.losses._series`, with its exact adjoint."""

    @staticmethod
    def forward(ctx, x: Tensor, m: Tensor) -> Tensor:
        from amn.losses._series import series_forward

        ctx.save_for_backward(x, m)
        return torch.from_numpy(series_forward(x.detach().cpu().numpy(), m.cpu().numpy())).to(x.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        from amn.losses._series import series_backward

        x, m = ctx.saved_tensors
        grad = series_backward(x.cpu().numpy(), m.cpu().numpy(), grad_out.double().cpu().numpy())
        return torch.from_numpy(grad).to(x.device), None


def _log_dd_series(x: Tensor, m: Tensor) -> Tensor:
    """log exp[x_valid]: the first row of exp(diag(x − min x) + N) by its Taylor series (see ``_series``)."""
    return _Series.apply(x.contiguous(), m.contiguous())


def _log_dd_table(x: Tensor, m: Tensor) -> Tensor:
    """log exp[x_valid] by scaling and squaring of the Opitz table; ``x`` ``[N, K]`` float64, max 0.

    For rows too wide for the series: its cost grows with the spread, this
    one's only with log2(spread).
    """
    x, xmin, k = _front(x, m)
    n, kmax = x.shape
    spread = -xmin.squeeze(-1)
    with torch.no_grad():
        steps = torch.ceil(torch.log2((spread / DELTA).clamp(min=1.0))).long()  # squarings per row
    scale = torch.pow(2.0, -steps.to(x.dtype))

    # exp(B) at the fine scale, B = diag(x' ) + 2^-s N with x' = (x − xmin)·2^-s ∈ [0, δ]: all positive.
    xs = ((x - xmin) * scale[:, None]).unsqueeze(-1)
    w = scale[:, None, None]
    eye = torch.eye(kmax, dtype=x.dtype, device=x.device).expand(n, kmax, kmax)
    table = eye
    for j in range(kmax - 1 + TAYLOR_EXTRA, 0, -1):
        up = torch.nn.functional.pad(table[:, 1:, :], (0, 0, 0, 1))  # row i <- row i+1 (N @ X)
        table = eye + (xs * table + w * up) / j
    # back to nodes x·2^-s (max 0) so squaring never overflows
    table = table * torch.exp(xmin.squeeze(-1) * scale)[:, None, None]
    for level in range(int(steps.max()) if n else 0):
        squared = torch.bmm(table, table)
        table = torch.where((steps > level)[:, None, None], squared, table)
    top = table[:, 0, :].gather(-1, (k - 1).unsqueeze(-1)).squeeze(-1)
    return torch.log(top)


# ---------------------------------------------------------------- the CC-AMN loss


def cc_loss(
    logits: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    normaliser: str = "guarded",
) -> tuple[Tensor, dict[str, int]]:
    """CC-AMN loss per row: ℓ = −log C(λ) − Σ_k y_k log λ_k over the valid actions.

    Args:
        logits: student outputs ``[B, A]``; target: soft targets ``[B, A]``
        (0 outside the mask, rows sum to 1); mask: bool ``[B, A]``.
        normaliser: ``guarded`` | ``naive`` | ``authors``. With ``authors`` the
            paper's code path is reproduced: rows whose CC mean (the gradient of
            the log-normaliser) has a NaN or a non-positive entry get plain
            cross-entropy instead (``fallback_rows``); rows whose mean is ±inf
            are neither, and contribute 0 (``dropped_rows``), as in
            cb_and_cc's ``train_amn.py``.

    Returns:
        ``(loss [B], diagnostics)``; diagnostics are those of
        :func:`cc_log_normaliser` plus ``fallback_rows`` and ``dropped_rows``.
    """
    diagnostics: dict[str, int] = {}
    log_lam = torch.log_softmax(logits.masked_fill(~mask, -math.inf), -1)
    ce = -(target * log_lam.masked_fill(~mask, 0.0)).sum(-1)
    if normaliser != "authors":
        loss = ce - cc_log_normaliser(logits, method=normaliser, mask=mask, diagnostics=diagnostics)
        fallback = dropped = torch.zeros_like(ce, dtype=torch.bool)
    else:
        mean = _authors_cc_mean(logits.detach(), mask)
        fallback = (torch.isnan(mean) | (mean <= 0)).any(-1)
        dropped = ~fallback & ~torch.isfinite(mean).all(-1)
        with torch.no_grad():  # the counts cover every row, the loss only the kept ones
            cc_log_normaliser(logits.detach(), method="authors", mask=mask, diagnostics=diagnostics)
        # Like the authors' boolean indexing: a discarded row never enters the CC graph, so its
        # NaN cannot leak into the gradient.
        loss = torch.where(fallback, ce, torch.zeros_like(ce))
        keep = (~fallback & ~dropped).nonzero().squeeze(-1)
        if keep.numel():
            log_c = cc_log_normaliser(logits[keep], method="authors", mask=mask[keep])
            loss = loss.index_put((keep,), ce[keep] - log_c)
    _add(diagnostics, fallback_rows=int(fallback.sum()), dropped_rows=int(dropped.sum()))
    return loss, diagnostics


def _authors_cc_mean(logits: Tensor, mask: Tensor) -> Tensor:
    """The CC mean as cb_and_cc computes it: autograd of their log-normaliser, float32."""
    with torch.enable_grad():
        z = logits.detach().float().requires_grad_(True)
        log_norm = _masked_logsumexp(z, mask) - _authors(z, mask)  # = log exp[z]
        (grad,) = torch.autograd.grad(log_norm.sum(), z)
    return grad.masked_fill(~mask, 1.0)  # invalid actions must not trigger the fallback
