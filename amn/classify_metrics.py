"""Test metrics of the label-smoothing study: accuracy, NLL, expected calibration error with
its reliability diagram, the CC mean's calibration, the logits' geometry, and how the naive
CC normaliser would fare on the logits.

All functions take logits ``[N, K]`` (any float dtype) and labels int64 ``[N]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from amn.losses.cc import cc_log_normaliser

__all__ = ["Reliability", "cc_mean", "classification_metrics", "expected_calibration_error",
           "logit_geometry", "naive_normaliser_check"]

ECE_BINS = 15


@dataclass
class Reliability:
    """Reliability diagram: equal-width confidence bins ``(i/B, (i+1)/B]`` of the top-class probability.

    ``count[b]`` samples per bin; ``accuracy[b]`` their accuracy and ``confidence[b]`` their mean
    top-class probability (both NaN in an empty bin, as JSON ``null`` once written).
    """

    edges: list[float]
    count: list[int]
    accuracy: list[float | None]
    confidence: list[float | None]


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor,
                               bins: int = ECE_BINS) -> tuple[float, Reliability]:
    """ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| over ``bins`` equal-width bins (Guo et al. 2017).

    probs ``[N, K]`` rows summing to 1; confidence is the top probability, the prediction its argmax.
    Bins are right-closed, ``(i/B, (i+1)/B]``, so a confidence of exactly 1 is in the last bin.
    """
    conf, pred = probs.double().max(-1)
    correct = (pred == labels).double()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    # bucketize(right=False) gives i with edges[i-1] < x <= edges[i]: right-closed bins.
    index = torch.bucketize(conf, edges[1:-1], right=False)
    count = torch.bincount(index, minlength=bins).double()
    acc_sum = torch.bincount(index, weights=correct, minlength=bins)
    conf_sum = torch.bincount(index, weights=conf, minlength=bins)
    n = max(len(labels), 1)
    ece = float((acc_sum - conf_sum).abs().sum() / n)  # Σ_b n_b/N · |acc_b − conf_b|
    filled = count > 0
    nan = lambda v: [float(x) if ok else None for x, ok in zip(v.tolist(), filled.tolist())]  # noqa: E731
    return ece, Reliability(edges.tolist(), [int(c) for c in count.tolist()],
                            nan(acc_sum / count.clamp(min=1)), nan(conf_sum / count.clamp(min=1)))


def cc_mean(logits: torch.Tensor) -> torch.Tensor:
    """The CC mean E[x] ``[N, K]`` (float64) of the continuous-categorical with λ = softmax(logits).

    It is ∇_z log exp[z] = ∇_z (logsumexp z − log C): the gradient of the guarded normaliser,
    accurate to ~1e-12. For a CC-trained model this, not softmax(z), is its fitted mean.
    """
    with torch.enable_grad():
        z = logits.detach().double().requires_grad_(True)
        log_dd = torch.logsumexp(z, -1) - cc_log_normaliser(z, method="guarded")
        (mu,) = torch.autograd.grad(log_dd.sum(), z)
    return mu


def logit_geometry(logits: torch.Tensor) -> dict[str, float]:
    """Means over rows of: the gap between the top logit and the mean of the others, and the
    standard deviation of the K − 1 other logits (0 when they are tied: LS pulls them together)."""
    z = logits.double()
    top = z.max(-1, keepdim=True)
    others = z.scatter(-1, top.indices, float("nan"))
    rest_mean = others.nanmean(-1)
    rest_std = ((others - rest_mean[:, None]) ** 2).nanmean(-1).sqrt()
    return {"logit_gap": float((top.values.squeeze(-1) - rest_mean).mean()),
            "offclass_logit_std": float(rest_std.mean())}


def naive_normaliser_check(logits: torch.Tensor) -> dict[str, int]:
    """How the naive closed-form normaliser fares on these logits, in their own dtype.

    ``naive_wrong_rows``: rows where it is non-finite or off by > 1 % from the guarded value
    (cc_log_normaliser's ``ill_conditioned_rows``); ``naive_nonfinite_rows``: non-finite ones.
    """
    diag: dict[str, int] = {}
    with torch.no_grad():
        cc_log_normaliser(logits.detach(), method="naive", diagnostics=diag)
    return {"rows": diag["rows"], "naive_wrong_rows": diag["ill_conditioned_rows"],
            "naive_nonfinite_rows": diag["nonfinite_rows"]}


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, float], dict]:
    """``(metrics, reliability diagrams)`` for test logits ``[N, K]`` and labels ``[N]``.

    metrics: ``accuracy``, ``nll`` (mean −log softmax(z)_y, nats), ``ece`` (15 bins, of the
    softmax), ``mean_confidence`` (mean top softmax probability), ``cc_mean_nll`` and
    ``cc_mean_ece`` (the same for the CC mean), and :func:`logit_geometry`.
    Diagrams: ``{"softmax": Reliability, "cc_mean": Reliability}`` as dicts.
    """
    z = logits.detach().double()
    logp = torch.log_softmax(z, -1)
    probs = logp.exp()
    ece, rel = expected_calibration_error(probs, labels)
    mu = cc_mean(z)
    cc_ece, cc_rel = expected_calibration_error(mu, labels)
    metrics = {
        "accuracy": float((z.argmax(-1) == labels).double().mean()),
        "nll": float(-logp.gather(-1, labels[:, None]).mean()),
        "ece": ece,
        "mean_confidence": float(probs.max(-1).values.mean()),
        "cc_mean_nll": float(-mu.gather(-1, labels[:, None]).log().mean()),
        "cc_mean_ece": cc_ece,
        **logit_geometry(z),
    }
    return metrics, {"softmax": asdict(rel), "cc_mean": asdict(cc_rel)}
