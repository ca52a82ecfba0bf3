"""Rounding-error bounds for comparing two float32 evaluations of the same network.

Two implementations of one network (ours and SB3's, or two memory layouts) sum the same
products in different orders, so their outputs differ by rounding alone. Each differs from
the exact result by at most the first-order forward-error bound below; their difference by
at most twice it. Tolerances in the tests come from here, not from one machine's kernels.

A worst-case bound (Higham §3.1: |ŷ − y| ≤ |W| e + γ_n(|W||a| + |b|)) is vacuous for a
five-layer network: it grows with the product of |W|'s norms, ~100 times the outputs here.
So the bound is the probabilistic one of Higham & Mary ("A new approach to probabilistic
rounding error analysis", SIAM J. Sci. Comput. 41, 2019): each rounding error δ with
|δ| ≤ u is taken as independent and mean-zero, so a sum of n products has an error whose
standard deviation is at most √n·u·(|W||a| + |b|) (each term's magnitude; for rounded
operands instead of rounded sums, ``rounding="operands"``), and an error e
already in a reaches the output as W e, with variance (W∘W)·var(e). The tests then allow
λ = 8 standard deviations: for a sub-Gaussian error, P(|error| > 8σ) ≤ 2·exp(−32) ≈ 3e-14 per
entry. ReLU is 1-Lipschitz and exact, Flatten exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

U32 = torch.finfo(torch.float32).eps / 2  # unit roundoff of float32


def gamma(n: int, u: float = U32) -> float:
    """Worst-case relative error of a sum of n terms, n·u/(1 − n·u) (Higham §3.1)."""
    return n * u / (1 - n * u)


#: Standard deviations allowed (see the module docstring).
LAMBDA = 8.0


def forward_error_bound(layers: Sequence[nn.Module], x: torch.Tensor, u: float = U32,
                        rounding: str = "sums") -> torch.Tensor:
    """λ standard deviations of the rounding error of ``layers`` applied in turn to ``x``.

    ``layers``: Conv2d, Linear, ReLU and Flatten modules; ``x``: the network's input as the
    implementations both receive it (float, already scaled); the input itself counts as
    rounded once (``u·|x|``, the ``/255`` both apply). Returns float64, the output's shape.

    ``rounding``: where the errors arise.
    - ``"sums"``: each partial sum of a dot product is rounded (float32 with any summation
      order): standard deviation ≤ √n·u·Σ|w a| per output (Higham & Mary, Thm 3.1).
    - ``"operands"``: each product's two operands are rounded to a format with unit roundoff
      ``u`` and the sum is accumulated exactly enough (bfloat16 autocast: float32 accumulation),
      then the output is rounded: Σ w a (δ + ε) has variance 2u²·Σ(w a)², plus (u·|y|)².
    """
    if rounding not in ("sums", "operands"):
        raise ValueError(f"rounding must be 'sums' or 'operands', got {rounding!r}")
    a = x.double()
    var = (u * a.abs()) ** 2  # variance bound of the error already in a
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            w = layer.weight.detach().double()
            b = layer.bias.detach().double() if layer.bias is not None else None
            if isinstance(layer, nn.Conv2d):
                def apply(inp, weight, bias=None, layer=layer):
                    return F.conv2d(inp, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
                fan_in = w[0].numel()
            else:
                apply = F.linear
                fan_in = w.shape[1]
            if rounding == "sums":
                magnitude = apply(a.abs(), w.abs(), b.abs() if b is not None else None)
                var = apply(var, w * w) + fan_in * (u * magnitude) ** 2
                a = apply(a, w, b)
            else:
                var = apply(var, w * w) + 2 * u * u * apply(a * a, w * w)
                a = apply(a, w, b)
                var = var + (u * a) ** 2
        elif isinstance(layer, nn.ReLU):
            a = a.clamp_min(0)  # the error passes through at most unchanged (1-Lipschitz)
        elif isinstance(layer, nn.Flatten):
            a, var = a.flatten(1), var.flatten(1)
        else:
            raise TypeError(f"no error bound for {type(layer).__name__}")
    return LAMBDA * var.sqrt()


def assert_within_rounding(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor, what: str) -> None:
    """``|actual − expected| ≤ 2·bound`` entry by entry (each side is within ``bound`` of exact)."""
    diff = (actual.double() - expected.double()).abs()
    worst = int((diff - 2 * bound).argmax())
    assert (diff <= 2 * bound).all(), (f"{what}: differ by {diff.flatten()[worst]:.3g} at {worst}, "
                                       f"twice the rounding bound is {2 * bound.flatten()[worst]:.3g}")
