"""One training run of the label-smoothing study (CC-LS): a small CNN trained with one loss
variant, evaluated on the test set.

Variants (Gordon-Rodriguez et al. 2020, "Uses and Abuses of the Cross-Entropy Loss", §CC-LS):
label smoothing trains on y_LS = (1 − ε)·onehot + ε/K; CC-LS replaces the cross-entropy on y_LS
with the continuous-categorical log-likelihood. ``cc-ls/naive`` is expected to fail: a
label-smoothed target has K − 1 equal entries, and the student that fits it K − 1 nearly tied
logits, where the closed-form normaliser divides by ~0. A failure (non-finite loss or gradient)
ends that run and is recorded with its epoch and step; it never raises.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from amn.classify_data import Split
from amn.classify_metrics import classification_metrics, naive_normaliser_check
from amn.classify_model import SmallCNN
from amn.losses import get_loss

__all__ = ["DEFAULT_VARIANTS", "RunConfig", "VARIANTS", "Variant", "smoothed_targets", "train_run",
           "write_json_atomic"]

SCHEMA = 1


@dataclass(frozen=True)
class Variant:
    """A loss (``amn.losses`` name and options) and whether it trains on label-smoothed targets."""

    loss: str
    options: dict[str, Any] = field(default_factory=dict)
    smoothed: bool = False


VARIANTS: dict[str, Variant] = {
    "ce": Variant("ce"),
    "ce-ls": Variant("ce", smoothed=True),
    "cc-ls/guarded": Variant("cc", {"normaliser": "guarded"}, smoothed=True),
    "cc-ls/authors": Variant("cc", {"normaliser": "authors"}, smoothed=True),
    "cc-ls/naive": Variant("cc", {"normaliser": "naive"}, smoothed=True),
    "squentropy": Variant("squentropy"),
}
#: squentropy (hard labels) is opt-in: --variants ... squentropy.
DEFAULT_VARIANTS = ("ce", "ce-ls", "cc-ls/guarded", "cc-ls/authors", "cc-ls/naive")

#: Channels per CNN block, per data set (CIFAR-10's are the paper's).
WIDTHS = {"mnist1d": (8, 16, 32), "cifar10": (32, 64, 128)}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run; its result JSON records it, and a rerun must match it.

    weight_decay is AdamW's decoupled decay (per step w ← w − lr·wd·w, all parameters); 0 is Adam.
    train_size / test_size: the first N samples (None: all).
    """

    dataset: str
    variant: str
    batchnorm: bool
    seed: int
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    epsilon: float = 0.1
    dropout: float = 0.0
    train_size: int | None = None
    test_size: int | None = None

    def run_id(self) -> str:
        """File stem, e.g. ``cc-ls-guarded_bn0_wd0_seed1``."""
        return (f"{self.variant.replace('/', '-')}_bn{int(self.batchnorm)}_wd{self.weight_decay:g}"
                f"_seed{self.seed}")

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose from: {', '.join(VARIANTS)}")
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"--epsilon {self.epsilon} must be in (0, 1)")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"--epochs {self.epochs} must be >= 1 and --batch-size {self.batch_size} >= 2")


def smoothed_targets(labels: torch.Tensor, num_classes: int, epsilon: float,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """y_LS = (1 − ε)·onehot(labels) + ε/K, ``[B, K]``; ε = 0 gives the one-hot targets."""
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(dtype)
    return onehot * (1.0 - epsilon) + epsilon / num_classes


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it: a reader (or a resumed
    study) sees either the whole result or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, path)


def build_model(cfg: RunConfig, split: Split) -> SmallCNN:
    """The CNN for this data set's input shape (``[N, C, L]`` or ``[N, C, H, W]``)."""
    x = split.x_train
    return SmallCNN(x.shape[1], x.shape[-1], split.num_classes, WIDTHS[split.name],
                    dims=x.dim() - 2, batchnorm=cfg.batchnorm, dropout=cfg.dropout)


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + int(value)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Eval-mode logits ``[N, K]`` for inputs ``[N, ...]``, in chunks of ``batch``."""
    model.eval()
    out = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    model.train()
    return out


class _Failure(Exception):
    """A non-finite loss or gradient at (epoch, step): ends the run, is recorded, is not raised further."""

    def __init__(self, epoch: int, step: int, reason: str) -> None:
        super().__init__(reason)
        self.record = {"epoch": epoch, "step": step, "reason": reason}


def _step(model, opt, loss_fn, variant: Variant, cfg: RunConfig, xb, yb, k: int,
          epoch: int, step: int, diag: dict[str, int], naive: dict[str, int]) -> float:
    """One update on a batch ``xb [B, ...]``, ``yb [B]``; returns the mean loss; raises _Failure."""
    logits = model(xb)
    target = smoothed_targets(yb, k, cfg.epsilon if variant.smoothed else 0.0, logits.dtype)
    mask = torch.ones_like(logits, dtype=torch.bool)
    out = loss_fn(logits, target, mask)
    _add(diag, out.diagnostics)
    # The naive form on *this* student's logits, for every variant: how often would it be wrong?
    _add(naive, naive_normaliser_check(logits.detach()))
    bad = ~torch.isfinite(out.loss.detach())
    if bad.any():
        raise _Failure(epoch, step, f"loss non-finite on {int(bad.sum())} of {len(yb)} rows")
    loss = out.loss.mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    bad_params = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad_params:
        raise _Failure(epoch, step, f"gradient non-finite in {len(bad_params)} parameter tensors "
                                    f"(first {bad_params[0]}) with a finite loss")
    opt.step()
    return float(loss.detach())


def train_run(cfg: RunConfig, split: Split) -> dict[str, Any]:
    """Train one model and evaluate it; returns the result record (see docs/cc_ls.md).

    Record: ``config``; ``status`` ``"ok"`` or ``"failed"`` with ``failure`` {epoch, step, reason}
    (1-based; then ``metrics`` is None); ``metrics`` from
    :func:`amn.classify_metrics.classification_metrics` on the final model plus
    ``best_epoch_accuracy`` (the paper's max over epochs: optimistic); ``reliability``;
    ``train_diagnostics`` (the loss's summed counts, e.g. fallback_rows, table_rows);
    ``train_naive_check`` / ``test_naive_check`` (the naive normaliser on the student's own
    logits); ``curve`` per epoch; ``steps``; ``wall_s``.
    """
    cfg.check()
    variant = VARIANTS[cfg.variant]
    split = split.subset(cfg.train_size, cfg.test_size)
    n_train = len(split.y_train)
    if n_train < cfg.batch_size:
        raise ValueError(f"{n_train} training samples < --batch-size {cfg.batch_size}: lower the batch size")
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, split)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = get_loss(variant.loss, **variant.options)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    diag: dict[str, int] = {}
    naive: dict[str, int] = {}
    curve: dict[str, list[float]] = {"train_loss": [], "test_accuracy": []}
    failure, step = None, 0
    # Drop the last partial batch: every step sees the same batch size (BatchNorm, Adam's scale).
    n_batches = n_train // cfg.batch_size
    try:
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(n_train, generator=shuffle)
            losses = []
            for b in range(n_batches):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                step += 1
                losses.append(_step(model, opt, loss_fn, variant, cfg, split.x_train[idx], split.y_train[idx],
                                    split.num_classes, epoch, step, diag, naive))
            test_logits = predict(model, split.x_test)
            curve["train_loss"].append(sum(losses) / len(losses))
            curve["test_accuracy"].append(float((test_logits.argmax(-1) == split.y_test).float().mean()))
    except _Failure as err:
        failure = err.record
    record: dict[str, Any] = {
        "schema": SCHEMA, "config": asdict(cfg), "variant": asdict(variant), "torch": torch.__version__,
        "status": "failed" if failure else "ok", "failure": failure, "steps": step,
        "train_diagnostics": diag, "train_naive_check": naive, "curve": curve,
        "metrics": None, "reliability": None, "test_naive_check": None,
    }
    if failure is None:
        test_logits = predict(model, split.x_test)
        metrics, reliability = classification_metrics(test_logits, split.y_test)
        metrics["best_epoch_accuracy"] = max(curve["test_accuracy"])
        record.update(metrics=metrics, reliability=reliability, test_naive_check=naive_normaliser_check(test_logits))
    record["wall_s"] = time.perf_counter() - start
    return record
