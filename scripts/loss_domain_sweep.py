"""Adversarial finiteness sweep of every student loss: value and gradient, float32 and float64.

    python scripts/loss_domain_sweep.py [--rows 200704] [--chunk 4096] [--seed 0] [--threads 1]
                                        [--device cpu] [--losses noel-m,ce ...] [--extreme]

Rows (seeded numpy, the same rows for every loss and both dtypes; generated in float64,
then cast): K = 2..18 valid actions at random slots of the 18 outputs; logits
N(0, s²) with s drawn from {1e-9, 1e-3, 1, 10, 100, 1000}, at the invalid slots too;
30 % of rows with exact ties (half tie a random subset of the valid logits at the row's
maximum, half at a random valid logit); 10 % of rows offset by 1e4; targets half
Dirichlet(0.3) over the valid actions, half one-hot at a random valid action; expert
values (mse-logits) N(0, s²).

Per loss case: rows whose loss is non-finite, and entries of d(Σ loss)/d(logits) [B, 18]
that are non-finite, for float32 and float64. Then the issue's second measurement: K = 6,
N(0, σ²) logits, Dirichlet(1) targets, 200 rows per σ: non-finite loss rows per σ.
``--extreme`` adds a third table, 1024 rows per scale s in 1e10 .. 1e300 (float32 only up to
1e37, beyond which the inputs themselves overflow): far beyond any training run, it locates each
loss's domain edge (docs/losses.md), e.g. z² overflowing float32 past ~1.8e19.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amn.losses import get_loss  # noqa: E402

A = 18
SCALES = (1e-9, 1e-3, 1.0, 10.0, 100.0, 1000.0)
EXTREME_SCALES = (1e10, 1e15, 1e17, 1e18, 1e19, 1e30, 1e37, 1e100, 1e154, 1e155, 1e300)
CASES = [
    ("ce", {}), ("cc", {}), ("ce-brier", {}), ("mse-logits", {}),
    ("squentropy", {}), ("squentropy-soft", {}),
    ("rescaled-square", {}), ("rescaled-square", {"soft": True, "M": 2.0}),
    ("noel-m", {}), ("noel-m-full", {}), ("noel-param-m", {}),
    ("noel-param-m", {"alpha": 0.5}), ("noel-param-m", {"alpha": 2.5}),
    ("noel-l", {}), ("noel-l-full", {}), ("parabolic", {}), ("circle", {}), ("cos", {}),
]
SIGMAS = (10.0, 30.0, 50.0, 100.0, 1000.0)
NOEL_UNBOUNDED = ("noel-m", "noel-m-full", "noel-param-m", "noel-l", "noel-l-full")


def case_id(name: str, opts: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in opts.items())


def adversarial_rows(n: int, seed: int, scales=SCALES):
    """(logits, target, mask, values) float64 numpy [n, A] (mask bool)."""
    rng = np.random.default_rng(seed)
    k = rng.integers(2, A + 1, n)
    mask = np.argsort(rng.random((n, A)), axis=1) < k[:, None]  # k random slots per row
    s = rng.choice(np.array(scales), n)[:, None]
    z = rng.standard_normal((n, A)) * s
    # exact ties: m = 2..K of the valid logits (random ones) take one value, the row's
    # maximum or the first of them
    tie = rng.random(n) < 0.3
    at_max = rng.random(n) < 0.5
    rank = np.argsort(np.argsort(np.where(mask, rng.random((n, A)), 2.0), 1), 1)  # valid first
    m = 2 + np.floor(rng.random(n) * (k - 1)).astype(int)
    join = rank < m[:, None]
    src = np.where(at_max, np.where(mask, z, -np.inf).argmax(1), rank.argmin(1))
    z = np.where(tie[:, None] & join, z[np.arange(n), src][:, None], z)
    z = z + np.where(rng.random(n) < 0.1, 1e4, 0.0)[:, None]
    # targets
    g = np.where(mask, rng.gamma(0.3, size=(n, A)), 0.0)
    hot = np.argmax(np.where(mask, rng.random((n, A)), -1.0), axis=1)
    onehot = np.zeros((n, A))
    onehot[np.arange(n), hot] = 1.0
    dead = g.sum(1) <= 0  # every gamma draw underflowed: one-hot instead
    use_hot = (rng.random(n) < 0.5) | dead
    target = np.where(use_hot[:, None], onehot, g / np.where(dead, 1.0, g.sum(1))[:, None])
    values = rng.standard_normal((n, A)) * s
    return z, target, mask, values


def sigma_rows(n: int, sigma: float, seed: int):
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, A), dtype=bool)
    mask[:, :6] = True
    z = np.zeros((n, A))
    z[:, :6] = rng.normal(0.0, sigma, (n, 6))
    target = np.zeros((n, A))
    target[:, :6] = rng.dirichlet(np.ones(6), n)
    return z, target, mask, z.copy()


def count(name, opts, z, target, mask, values, dtype, chunk, device="cpu"):
    """(non-finite loss rows, non-finite gradient entries, rows)."""
    loss_fn = get_loss(name, **opts)
    bad_rows = bad_grad = 0
    for lo in range(0, len(z), chunk):
        sl = slice(lo, lo + chunk)
        t = lambda x: torch.tensor(x[sl], dtype=dtype, device=device)  # noqa: E731
        logits = t(z).requires_grad_(True)
        loss = loss_fn(logits, t(target), torch.tensor(mask[sl], device=device), expert_values=t(values)).loss
        loss.sum().backward()
        bad_rows += int((~torch.isfinite(loss.detach())).sum())
        bad_grad += int((~torch.isfinite(logits.grad)).sum())
    return bad_rows, bad_grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_704)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="where the losses run, e.g. cuda")
    ap.add_argument("--losses", default="", help="comma-separated names (default: all cases)")
    ap.add_argument("--extreme", action="store_true", help="add a table of scales 1e10..1e300")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    wanted = set(filter(None, args.losses.split(",")))
    cases = [c for c in CASES if not wanted or c[0] in wanted]
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, threads {args.threads}, device {args.device}")
    print(f"# rows {args.rows}, chunk {args.chunk}, seed {args.seed}, scales {SCALES}")
    rows = adversarial_rows(args.rows, args.seed)
    print(f"# gradient entries per dtype: {args.rows * A} ({args.rows} rows x {A})")
    print(f"{'loss':28s} {'f32 loss rows':>13s} {'f32 grad':>10s} {'f64 loss rows':>13s} {'f64 grad':>10s} {'s':>6s}")
    t_all = time.perf_counter()
    for name, opts in cases:
        t0 = time.perf_counter()
        res = [count(name, opts, *rows, dtype, args.chunk, args.device) for dtype in (torch.float32, torch.float64)]
        print(f"{case_id(name, opts):28s} {res[0][0]:13d} {res[0][1]:10d} {res[1][0]:13d} {res[1][1]:10d} "
              f"{time.perf_counter() - t0:6.1f}", flush=True)
    print("\n# K = 6, N(0, σ²) logits, Dirichlet(1) targets, 200 rows per σ: non-finite loss rows "
          "(float32 / float64)")
    names = [c for c in cases if c[0] in NOEL_UNBOUNDED] or cases
    print(f"{'loss':28s} " + " ".join(f"{'σ=' + format(s, 'g'):>11s}" for s in SIGMAS))
    for name, opts in names:
        cells = []
        for i, sigma in enumerate(SIGMAS):
            r = sigma_rows(200, sigma, args.seed + 1 + i)
            cells.append("/".join(str(count(name, opts, *r, dt, args.chunk, args.device)[0])
                                  for dt in (torch.float32, torch.float64)))
        print(f"{case_id(name, opts):28s} " + " ".join(f"{c:>11s}" for c in cells), flush=True)
    if args.extreme:
        print("\n# extreme scales, 1024 rows each: non-finite loss rows/gradient entries, float32; float64"
              " ('-': float32 inputs would overflow); only cases with any are listed")
        for scale in EXTREME_SCALES:
            z = adversarial_rows(1024, args.seed + 100, (scale,))
            cells = []
            for name, opts in cases:
                r = ["-" if dt == torch.float32 and scale > 1e37
                     else "%d/%d" % count(name, opts, *z, dt, args.chunk, args.device)
                     for dt in (torch.float32, torch.float64)]
                if any(c not in ("-", "0/0") for c in r):
                    cells.append(f"{case_id(name, opts)} {r[0]}; {r[1]}")
            print(f"s={scale:g}: " + (", ".join(cells) or "all finite"), flush=True)
    print(f"\n# total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
