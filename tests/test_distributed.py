"""Distributed training (torchrun, gloo on CPU): games sharded across ranks, DDP-averaged updates.

0. Devices, without a GPU: ``resolve_device`` (cuda:LOCAL_RANK per rank), the backend it implies
   (nccl/gloo), the current GPU set before nccl joins, and the collectives' tensor device.
1. The update: two spawned processes (gloo, a FileStore) each take one shard of the games'
   minibatch; their DDP gradient and parameters after one Adam step must equal a single
   process's on the concatenated minibatch, also for an uneven split (3 games on 2 ranks,
   with feature regression's per-game projections unused on the other rank). A NaN loss on one
   rank then stops both with NonFiniteLoss. No ALE needed.
2. End to end: ``python -m torch.distributed.run --nproc-per-node 2 -m amn train-student`` with
   the smoke config and two games whose tiny random-init experts are exported here (so the
   shared zoo expert is not needed): the ranks end with identical parameters; the checkpoint
   resumes with 2 processes (stopped by SIGTERM, which every rank obeys at the same step) and
   then in one process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from amn.errors import UsageError
from amn.config import GameConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def shards_cases():
    return {
        "even": dict(games=["Pong", "Breakout"]),
        "uneven_features_heads": dict(games=["Pong", "Breakout", "Seaquest"], feature_regression=True,
                                      per_game_heads=True),
    }


#: The DDP-vs-single comparison runs in float64 (see test_ddp_update_equals_single_process_update).
DTYPE = torch.float64
U64 = torch.finfo(torch.float64).eps / 2  # unit roundoff


def make_config(games: list[str], **fields) -> TrainConfig:
    return TrainConfig(games=[GameConfig(g, "unused") for g in games], batch_per_game=4, torch_threads=1, **fields)


def game_batch(cfg: TrainConfig, g: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A deterministic synthetic replay sample of game ``g`` (same on every process) and its action mask."""
    from amn.collect import action_mask
    from experts.atari import minimal_action_set

    gen = torch.Generator().manual_seed(100 + g)
    B = cfg.batch_per_game
    mask = action_mask(minimal_action_set(cfg.games[g].game))
    q = torch.randn(B, 18, generator=gen, dtype=DTYPE).masked_fill(~mask, float("-inf"))
    batch = {"obs": torch.randint(0, 256, (B, 4, 84, 84), generator=gen, dtype=torch.uint8),
             "target": torch.softmax(q, -1)}
    if cfg.feature_regression:
        batch["features"] = torch.randn(B, 512, generator=gen, dtype=DTYPE)
    return batch, mask


def one_update(cfg: TrainConfig, games: list[int]):
    """Build the trainer's modules as ``train`` does, run one update on ``games``' batches.

    Returns ``({"grads": ..., "params": ...}, learner, batches)``."""
    from torch import nn

    from amn.student import FEATURE_DIM, Student
    from amn.tb import Scalars
    from amn.learner import Learner, make_loss

    torch.manual_seed(cfg.seed)
    student = Student(cfg.num_games, per_game_heads=cfg.per_game_heads).to(DTYPE)
    projections = nn.ModuleList(nn.Linear(FEATURE_DIM, FEATURE_DIM) for _ in range(cfg.num_games)) \
        if cfg.feature_regression else nn.ModuleList()
    projections.to(DTYPE)
    params = list(student.parameters()) + list(projections.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)
    init = {f"student.{k}": p.detach().clone() for k, p in student.named_parameters()}
    init |= {f"projections.{k}": p.detach().clone() for k, p in projections.named_parameters()}
    batches, masks = zip(*(game_batch(cfg, g) for g in games))
    learner = Learner(cfg, student, projections, params, optimizer, make_loss(cfg), games, torch.stack(masks),
                      Scalars())
    learner.update(list(batches), step=0)
    named = {f"student.{k}": p for k, p in student.named_parameters()}
    named |= {f"projections.{k}": p for k, p in projections.named_parameters()}
    result = {"grads": {k: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                        for k, p in named.items()},
              "params": {k: p.detach().clone() for k, p in named.items()},
              "initial": {k: p.detach().clone() for k, p in init.items()}}
    return result, learner, list(batches)


def _rank_worker(rank: int, world_size: int, store_path: str, out_dir: str) -> None:
    """Spawned: join a 2-process gloo group; for each case update on this rank's shard, save grads and
    params; then a second update whose loss is NaN on rank 1 only: both ranks must stop, none hang."""
    import torch.distributed as dist

    from amn import distributed
    from amn.errors import NonFiniteLoss

    torch.set_num_threads(1)
    store = dist.FileStore(store_path, world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size)
    try:
        for case, fields in shards_cases().items():
            cfg = make_config(**fields)
            result, learner, batches = one_update(cfg, distributed.shard_games(cfg.num_games, rank, world_size))
            if rank == 1:  # the loss diverges on this rank only
                loss_fn = learner.loss_fn

                def poisoned(*args, loss_fn=loss_fn):
                    out = loss_fn(*args)
                    out.loss = out.loss * float("nan")
                    return out

                learner.loss_fn = poisoned
            try:
                learner.update(batches, step=4)
                result["second_update"] = "no error"
            except NonFiniteLoss as err:
                result["second_update"] = str(err)
            torch.save(result, Path(out_dir) / f"rank{rank}-{case}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_update_equals_single_process_update(tmp_path):
    """DDP on shards == one process on all games, for the gradient and for the Adam step.

    Tolerances, derived (not tuned to a machine): the two computations do the same arithmetic
    in another order: rows are split across ranks, each rank reduces its own rows, and the
    all-reduce adds the two partial sums. They run in float64, so that this order is all
    that differs (a float32 comparison measures oneDNN's kernel choice for each batch size,
    which varies between CPUs).

    - Gradient. A sum of N terms computed in two orders differs by at most 2·γ_N·Σ|terms|,
      γ_N = N·u/(1 − N·u) (Higham, Accuracy and Stability, §4.2). The longest reduction
      here is conv1's weight gradient over G·B rows × 20·20 positions, N ≤ 12·400 = 4,800,
      and for every entry Σ|terms| ≤ κ·max|g| over its tensor, where κ bounds the cancellation.
      Allowing κ = 10^4 gives atol = 2·γ_N·10^4·max|g| ≈ 1e-8·max|g|: any real error (a game
      missing, a wrong loss scale) is ≥ 1/G of the gradient, six orders above it.
    - Parameters after one Adam step. Adam's first step is lr·g/(|g| + eps), whose derivative
      in g is lr·eps/(|g| + eps)². So a gradient difference δ moves the step by at most
      lr·eps·δ/(max(|g| − δ, 0) + eps)² (mean-value theorem), plus the rounding of the step
      and of p − step: 4·u·(|p| + lr). This uses the δ actually measured, entry by entry.
    """
    import torch.multiprocessing as mp

    mp.spawn(_rank_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    n_terms = 12 * 20 * 20
    gamma = n_terms * U64 / (1 - n_terms * U64)
    for case, fields in shards_cases().items():
        cfg = make_config(**fields)
        single = one_update(cfg, list(range(cfg.num_games)))[0]
        ranks = [torch.load(tmp_path / f"rank{r}-{case}.pt") for r in range(2)]
        # A NaN on one rank stopped both (join would have hung otherwise), naming step and game there.
        assert "non-finite policy-regression loss" in ranks[1]["second_update"]
        assert "agent step 4 in Breakout" in ranks[1]["second_update"]
        assert ranks[0]["second_update"] == "non-finite loss on another rank at agent step 4"
        eps, lr = 1e-8, cfg.lr  # one_update's Adam: torch's default eps
        for name, grad in single["grads"].items():
            p0 = single["initial"][name]
            for r, result in enumerate(ranks):
                torch.testing.assert_close(result["grads"][name], grad, rtol=0,
                                           atol=2 * gamma * 1e4 * float(grad.abs().max()),
                                           msg=lambda m: f"{case}: rank {r} gradient of {name}: {m}")
                delta = (result["grads"][name] - grad).abs()
                sensitivity = lr * eps / ((grad.abs() - delta).clamp_min(0) + eps) ** 2
                bound = sensitivity * delta + 4 * U64 * (p0.abs() + lr)
                error = (result["params"][name] - single["params"][name]).abs()
                worst = int((error - bound).argmax())
                assert (error <= bound).all(), (
                    f"{case}: rank {r} parameter {name} after the step differs by {error.flatten()[worst]:.3g} "
                    f"at {worst}, bound {bound.flatten()[worst]:.3g} (gradient difference "
                    f"{delta.flatten()[worst]:.3g})")
        assert any(g.abs().sum() > 0 for g in single["grads"].values())
        # The step moved the parameters (the comparison is not of two unchanged tensors).
        assert all((single["params"][k] != single["initial"][k]).any() for k in single["params"]
                   if single["grads"][k].abs().sum() > 0)


def test_shards_cover_every_game_once_and_too_many_ranks_is_refused():
    from amn.distributed import loss_scale, shard_games

    for games, world in [(2, 2), (3, 2), (8, 3), (5, 5)]:
        shards = [shard_games(games, r, world) for r in range(world)]
        assert sorted(g for s in shards for g in s) == list(range(games))
        # DDP averages over ranks: the scaled per-rank means must weigh every game 1/games.
        weights = [loss_scale(len(s), games, world) / len(s) / world for s in shards]
        assert all(abs(w - 1 / games) < 1e-12 for w in weights)
    with pytest.raises(UsageError, match="2 processes but only 1 game: "):
        shard_games(1, 0, 2)


# ---- devices: resolve_device and the backend, without a GPU (torch.cuda monkeypatched) ------------


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two visible GPUs, as far as resolve_device can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("spec,local_rank,expected", [
    ("cpu", None, "cpu"), ("cpu", 1, "cpu"),
    ("cuda", None, "cuda:0"), ("cuda:1", None, "cuda:1"), ("auto", None, "cuda:0"),
    ("cuda", 0, "cuda:0"), ("cuda", 1, "cuda:1"), ("auto", 1, "cuda:1"),  # torchrun: cuda:LOCAL_RANK
])
def test_resolve_device_with_gpus(two_gpus, spec, local_rank, expected):
    from amn.distributed import backend_for, resolve_device

    device = resolve_device(spec, local_rank)
    assert device == torch.device(expected)
    assert backend_for(device) == ("gloo" if expected == "cpu" else "nccl")


@pytest.mark.parametrize("spec,local_rank,message", [
    ("cuda:1", 0, r"device=cuda:1 under torchrun, where each rank uses cuda:LOCAL_RANK; use device: cuda"),
    ("cuda", 2, r"LOCAL_RANK 2 \(device=cuda\) needs cuda:2 but only 2 GPU\(s\) are visible"),
    ("cuda:2", None, r"device=cuda:2 needs cuda:2 but only 2 GPU\(s\) are visible"),
])
def test_resolve_device_refuses_a_missing_or_shared_gpu(two_gpus, spec, local_rank, message):
    from amn.distributed import resolve_device

    with pytest.raises(UsageError, match=message):
        resolve_device(spec, local_rank)


def test_resolve_device_without_cuda(monkeypatch):
    from amn.distributed import backend_for, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", 1) == resolve_device("cpu") == torch.device("cpu")
    assert backend_for(resolve_device("auto")) == "gloo"
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(UsageError, match=rf"device={spec} but torch.cuda.is_available\(\) is False .*"
                                             r"use device: cpu or auto"):
            resolve_device(spec)


@pytest.mark.parametrize("device,expected", [("cuda:1", {"backend": "nccl", "gpu": 1}), ("cpu", {"backend": "gloo"})])
def test_init_from_env_backend_and_current_gpu_follow_the_device(monkeypatch, device, expected):
    """Under torchrun a CUDA rank joins with nccl after making its GPU the current one (nccl's
    all_gather_object needs it); a CPU rank joins with gloo. The process group itself is faked."""
    import torch.distributed as dist

    from amn import distributed

    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.setdefault("backend", backend))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("gpu", torch.device(d).index))
    distributed.init_from_env(torch.device(device))
    assert calls == expected
    assert distributed.launched_local_rank() == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.launched_local_rank() is None


@pytest.mark.parametrize("backend,expected", [("nccl", "cuda:1"), ("gloo", "cpu")])
def test_collectives_use_cuda_tensors_under_nccl(monkeypatch, backend, expected):
    import torch.distributed as dist

    from amn import distributed

    monkeypatch.setattr(dist, "get_backend", lambda: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert distributed._collective_device() == torch.device(expected)


# ---- end to end with torchrun --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_experts(tmp_path_factory) -> dict[str, Path]:
    """Random-init experts in the project's own format: they only need to play their own game."""
    from experts import Expert, export_expert
    from experts.atari import minimal_action_set
    from experts.network import ExpertNetwork

    out = tmp_path_factory.mktemp("experts")
    paths = {}
    for game in ("Pong", "Breakout"):
        torch.manual_seed(0)
        expert = Expert(ExpertNetwork(len(minimal_action_set(game))), game, "dqn")
        paths[game] = export_expert(expert, f"{game.lower()}_tiny", out_dir=out, command="pytest")
    return paths


def torchrun(run_dir: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "amn", "train-student", "--run-dir", str(run_dir),
           "--no-progress", "--no-eval", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)


def tiny_sets(experts: dict[str, Path], total: int) -> list[str]:
    games = ", ".join(f"{{game: {g}, expert: {p}}}" for g, p in experts.items())
    sets = [f"games=[{games}]", f"total_agent_steps={total}", "learning_starts_per_game=100",
            "replay_capacity_per_game=1000", "log_every_agent_steps=100"]
    return [a for s in sets for a in ("--set", s)]


@pytest.mark.slow
def test_torchrun_two_ranks_end_to_end_sigterm_and_resume(tmp_path, tiny_experts):
    from amn.cli import main
    from amn.distributed import state_hash

    run = tmp_path / "run"
    proc = torchrun(run, "--config", str(SMOKE), *tiny_sets(tiny_experts, 600))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["counters"]["agent_steps"] == 600 and ckpt["counters"]["lockstep_steps"] == 300
    # One per 4 steps of each game, from the first step that starts with warm replays (100 each).
    assert ckpt["counters"]["updates"] == (300 - 100) // 4
    assert not any(k.startswith("module.") for k in ckpt["student"])

    # Both ranks ended with the same parameters, and they are the checkpoint's.
    record = json.loads((run / "distributed.json").read_text())
    assert record["games_per_rank"] == [["Pong"], ["Breakout"]]
    hashes = record["parameter_sha256_per_rank"]
    state = {**{f"student.{k}": v for k, v in ckpt["student"].items()},
             **{f"projections.{k}": v for k, v in ckpt["projections"].items()}}
    assert hashes[0] == hashes[1] == state_hash(state)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert {"Pong/policy_regression_loss", "Breakout/policy_regression_loss", "train/loss"} <= set(
        acc.Tags()["scalars"])  # rank 1's game reaches rank 0's TensorBoard

    # --resume with the same world size, then SIGTERM (torchrun forwards it to every rank): all ranks
    # stop at the same lockstep step and rank 0 checkpoints; nobody waits forever in a collective.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "amn", "train-student", "--run-dir", str(run), "--resume", "--no-progress",
           "--set", "total_agent_steps=100000", "--set", "checkpoint_minutes=0.02"]
    resumed = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while torch.load(run / "checkpoint.pt", weights_only=False)["counters"]["resumes"] == 0:
            assert time.monotonic() < deadline and resumed.poll() is None, "no checkpoint after --resume in 120 s"
            time.sleep(0.5)
        resumed.send_signal(signal.SIGTERM)
        _, err = resumed.communicate(timeout=90)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert "interrupted at" in err and "checkpoint saved" in err, err[-3000:]
    assert json.loads((run / "distributed.json").read_text())["in_sync"]
    counters = torch.load(run / "checkpoint.pt", weights_only=False)["counters"]
    assert counters["agent_steps"] > 600 and counters["agent_steps"] % 2 == 0 and counters["resumes"] == 1

    # A single process resumes the distributed checkpoint too.
    target = counters["agent_steps"] + 100
    assert main(["train-student", "--run-dir", str(run), "--resume", "--no-progress", "--no-eval",
                 "--set", f"total_agent_steps={target}"]) == 0
    counters = torch.load(run / "checkpoint.pt", weights_only=False)["counters"]
    assert counters["agent_steps"] == target and counters["resumes"] == 2
