"""Why parabolic, circle and cos collapse: each student ends on one action per game (issue #20).

In the losses study these three bounded Noel losses give a student whose entropy is 0 by ~13k
agent steps per game, with logit spreads ~150 and no gradient left. This script shows the same
on a small problem with nothing Atari in it, so the cause is the loss, not the pipeline:

- a teacher: soft targets softmax(x W) over K = 6 actions on N = 4,096 random states
  (x ~ N(0, I_32)), its argmax spread over the actions (the share of the most common is printed);
- a student: a 32-64-18 MLP with the trainer's masking (the 12 units past K are invalid), batches
  of 32, Adam at the trainer's settings (lr 2.5e-4, eps 3e-4) and at the authors' CIFAR-10
  notebook's (lr 1e-5, Keras' eps 1e-7; 10x the steps);
- per loss and seed: top-1 agreement with the teacher, the share of states on the student's most
  chosen action (1.0: one action everywhere), its mean entropy (nats) and logit spread.

The mechanism: ℓ = 1 − p_c² (and √(1 − p_c²), cos(π p_c / 2)) has a gradient in the logits of
order p_c², so a state whose labelled action is unlikely teaches almost nothing and a likely one
teaches more: whichever action the student starts to favour gains the most, everywhere. With
cross-entropy the gradient is q − p, which pulls each state back to its target.

    python scripts/bounded_loss_collapse.py [--seeds 3] [--csv docs/results/losses/collapse.csv]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amn.losses import get_loss  # noqa: E402
from amn.student import NUM_OUTPUTS  # noqa: E402

K, D, N, BATCH = 6, 32, 4096, 32
LOSSES = ("ce", "noel-m", "parabolic", "circle", "cos")
#: name -> (lr, eps, steps, whose): the trainer's Adam (amn.config.TrainConfig) and the authors' CIFAR-10 one.
OPTIMISERS = {"trainer": (2.5e-4, 3e-4, 3_000, "the trainer's"),
              "authors": (1e-5, 1e-7, 30_000, "the authors' CIFAR-10 notebook's")}


def teacher(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """States ``[N, D]``, soft targets ``[N, 18]`` (zero past K) and the valid-action mask ``[N, 18]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g)
    q = torch.softmax(x @ (0.3 * torch.randn(D, K, generator=g)), -1)  # entropy ~1.2 nats, as soft as the Atari experts'
    target = torch.zeros(N, NUM_OUTPUTS)
    target[:, :K] = q
    mask = torch.zeros(N, NUM_OUTPUTS, dtype=torch.bool)
    mask[:, :K] = True
    return x, target, mask


def train_student(loss_name: str, optimiser: str, seed: int, x, target, mask) -> dict[str, float]:
    lr, eps, steps, _ = OPTIMISERS[optimiser]
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(D, 64), torch.nn.ReLU(), torch.nn.Linear(64, NUM_OUTPUTS))
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=eps)
    loss_fn = get_loss(loss_name)
    g = torch.Generator().manual_seed(1000 + seed)
    for _ in range(steps):
        i = torch.randint(0, N, (BATCH,), generator=g)
        loss = loss_fn(net(x[i]), target[i], mask[i]).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = net(x).masked_fill(~mask, float("-inf"))
        p = torch.softmax(z, -1)
        chosen = z.argmax(-1)
        valid = z[:, :K]
        return {"agreement": float((chosen == target.argmax(-1)).float().mean()),
                "top_action_share": float(torch.bincount(chosen, minlength=K).max()) / N,
                "entropy": float(-(p * p.clamp_min(1e-45).log()).sum(-1).mean()),
                "logit_spread": float((valid.max(-1).values - valid.min(-1).values).mean())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--losses", nargs="+", default=list(LOSSES))
    ap.add_argument("--optimisers", nargs="+", default=list(OPTIMISERS), choices=list(OPTIMISERS))
    ap.add_argument("--csv", type=Path, help="write one row per (loss, optimiser, seed)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x, target, mask = teacher()
    q_top = float(torch.bincount(target.argmax(-1), minlength=K).max()) / N
    q_entropy = float(-(target[:, :K] * target[:, :K].log()).sum(-1).mean())
    print(f"teacher: K = {K}, N = {N}; its most common argmax on {q_top:.3f} of states; entropy {q_entropy:.3f} nats")
    rows = []
    for optimiser in args.optimisers:
        lr, eps, steps, whose = OPTIMISERS[optimiser]
        print(f"\nAdam lr {lr:g}, eps {eps:g}, {steps:,} steps of {BATCH} ({whose} settings); means over "
              f"{args.seeds} seeds")
        print(f"{'loss':10s} {'agreement':>9s} {'one action':>10s} {'entropy':>8s} {'spread':>8s}")
        for name in args.losses:
            started = time.perf_counter()
            mine = [train_student(name, optimiser, s, x, target, mask) | {"loss": name, "optimiser": optimiser,
                                                                           "seed": s} for s in range(args.seeds)]
            rows += mine
            mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("agreement", "top_action_share", "entropy",
                                                                      "logit_spread")}
            print(f"{name:10s} {mean['agreement']:9.3f} {mean['top_action_share']:10.3f} {mean['entropy']:8.3f} "
                  f"{mean['logit_spread']:8.1f}   ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.csv:
        from amn.study_report import write_csv

        write_csv(args.csv, rows, ["loss", "optimiser", "seed", "agreement", "top_action_share", "entropy",
                                   "logit_spread"])
        print(f"\nwrote {args.csv}")


if __name__ == "__main__":
    main()
