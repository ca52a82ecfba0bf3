"""Accuracy against mpmath and cost of the three CC normalisers.

    python scripts/bench_normaliser.py [--rows 4096] [--repeats 5] [--threads 1] [--csv PATH]

Accuracy: the adversarial rows of tests/test_cc_normaliser.py (ties, near ties,
near uniform, dominant logit, N(0, σ), offsets, wide), per K, against the
50-digit reference: worst relative error of log C, worst absolute gradient
error, and rows whose value or gradient is non-finite or > 1 % wrong.
Cost: forward + backward of ``cc_log_normaliser(...).sum()`` on one batch of
``--rows`` rows (a quarter each: N(0,1) logits, Pong-like tied pairs + 1e-3
noise, near uniform (σ = 1e-2), N(0,3)), median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from amn.losses import cc_log_normaliser  # noqa: E402
from cc_reference import log_normaliser as reference  # noqa: E402
from test_cc_normaliser import adversarial_rows  # noqa: E402

METHODS = ("naive", "authors", "guarded")


def timing_batch(rows: int, k: int, gen: torch.Generator) -> torch.Tensor:
    q = rows // 4
    pairs = torch.arange(k, dtype=torch.float64).div(2, rounding_mode="floor")
    return torch.cat([
        torch.randn(q, k, generator=gen, dtype=torch.float64),
        pairs + 1e-3 * torch.randn(q, k, generator=gen, dtype=torch.float64),
        1e-2 * torch.randn(q, k, generator=gen, dtype=torch.float64),
        3 * torch.randn(rows - 3 * q, k, generator=gen, dtype=torch.float64),
    ])


def accuracy(method: str, k: int, dtype: torch.dtype, refs) -> tuple[float, float, int]:
    worst_value = worst_grad = 0.0
    bad = 0
    for row, (ref_value, ref_grad) in refs:
        z = torch.tensor(row, dtype=dtype, requires_grad=True)
        value = cc_log_normaliser(z, method=method)
        value.backward()
        err_v = abs(value.item() - ref_value) / abs(ref_value)
        err_g = max(abs(a - b) for a, b in zip(z.grad.tolist(), ref_grad))
        if not (err_v <= 1e-2 and err_g <= 1e-2):  # NaN-safe
            bad += 1
            continue
        worst_value, worst_grad = max(worst_value, err_v), max(worst_grad, err_g)
    return worst_value, worst_grad, bad


def cost_ms(method: str, batch: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        z = batch.detach().clone().requires_grad_(True)
        start = time.perf_counter()
        cc_log_normaliser(z, method=method).sum().backward()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 6, 9, 18])
    parser.add_argument("--csv", type=Path, default=ROOT / "docs" / "results" / "bench_normaliser.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)

    header = ["K", "dtype", "method", "max_rel_err_logC", "max_abs_err_grad", "bad_rows", "rows", "ms_fwd_bwd"]
    table = []
    for k in args.ks:
        rows = adversarial_rows(k, torch.Generator().manual_seed(k))
        refs64 = [(r, reference(r)) for r in rows]
        rows32 = [torch.tensor(r, dtype=torch.float32).double().tolist() for r in rows]
        refs32 = [(r, reference(r)) for r in rows32]
        batch = timing_batch(args.rows, k, gen)
        for dtype, refs in ((torch.float32, refs32), (torch.float64, refs64)):
            for method in METHODS:
                ev, eg, bad = accuracy(method, k, dtype, refs)
                ms = cost_ms(method, batch.to(dtype), args.repeats)
                table.append([k, str(dtype).removeprefix("torch."), method, f"{ev:.1e}", f"{eg:.1e}",
                              bad, len(refs), f"{ms:.1f}"])
                print(" | ".join(str(c) for c in table[-1]), flush=True)

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        csv.writer(f).writerows([header, *table])
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in table:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print(f"\n{args.rows} rows, {args.threads} thread(s), torch {torch.__version__}; accuracy columns exclude "
          "bad rows (non-finite or > 1 % wrong), which are counted separately.")


if __name__ == "__main__":
    main()
