"""Train an Actor-Mimic student: ``train(cfg, run_dir)``.

Read top to bottom like CleanRL's ``dqn_atari.py``:

1. setup: loss, experts, student, optimiser, one replay per game, resume state;
2. loop over lockstep steps until ``total_agent_steps``:
   the student acts ε-greedy in every game, the experts label each new state once
   (soft target ``softmax(Q_E/τ)``), and every ``train_every_per_game`` agent steps of
   each game one update runs on ``batch_per_game`` samples from every game's replay:
   policy regression (the configured loss) plus optional feature regression;
3. log to TensorBoard, checkpoint atomically every few minutes and on Ctrl-C/SIGTERM;
4. at the end: a last checkpoint, then the evaluation table.

A non-finite loss or gradient stops the run at once with :class:`NonFiniteLoss`,
naming the step and game, before anything is written: the last good checkpoint stays.

Under ``torchrun`` (``amn/distributed.py``) every rank runs this same loop on its shard of
the games, and :class:`Learner` (the update) wraps the student in DistributedDataParallel;
the few places where ranks must agree are marked "Distributed:".

Devices: the student, its projections and the optimiser live on ``cfg.device``
(:func:`amn.distributed.resolve_device`); the experts, the environments and the replays stay on
the CPU, and each minibatch is copied to the device in :meth:`Learner.update`. Checkpoints load
on the CPU (``map_location="cpu"``), so a GPU run resumes or evaluates anywhere.
"""

from __future__ import annotations

import copy
import json
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amn import distributed
from amn.checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_rng, rng_state, save_checkpoint
from amn.cli import UsageError
from amn.collect import Collector, load_experts
from amn.config import TrainConfig, from_dict, save_config
from amn.losses import cc_log_normaliser
from amn.replay import GameReplay
from amn.student import FEATURE_DIM, Student, entropy, masked_logits
from amn.tb import Scalars


class NonFiniteLoss(RuntimeError):
    """The loss or gradient became NaN/inf; the run stops and keeps its last good checkpoint.

    Besides the message: ``step`` (agent step), ``game`` (None for the gradient or another rank)
    and, for a non-finite loss, ``rows`` and ``nonfinite_rows`` of the failing batch.
    """

    def __init__(self, message: str, *, step: int | None = None, game: str | None = None,
                 rows: int = 0, nonfinite_rows: int = 0):
        super().__init__(message)
        self.step, self.game, self.rows, self.nonfinite_rows = step, game, rows, nonfinite_rows


def build_student(cfg: TrainConfig, device: torch.device | str = "cpu"):
    """``(student, projections, params, optimizer)`` for ``cfg``, initialised from ``cfg.seed``.

    ``projections``: for feature regression, one linear map per game from the student's 512
    features to the expert's (empty otherwise); ``params`` are what the optimiser updates.
    """
    torch.manual_seed(cfg.seed)  # the same student init on every rank (DDP also broadcasts rank 0's)
    # Initialised on the CPU, then moved: the same initial weights on every device.
    student = Student(cfg.num_games, per_game_heads=cfg.per_game_heads).to(device)
    projections = nn.ModuleList(nn.Linear(FEATURE_DIM, FEATURE_DIM) for _ in range(cfg.num_games)) \
        if cfg.feature_regression else nn.ModuleList()
    projections.to(device)
    params = list(student.parameters()) + list(projections.parameters())
    # fused: one kernel for all parameters (CPU and CUDA), measured 33 ms -> 5 ms per step here (1 thread).
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                                 fused=True)
    return student, projections, params, optimizer


def make_loss(cfg: TrainConfig):
    """``loss_fn(logits, target, mask, expert_values) -> LossOutput`` for the configured loss."""
    from amn.losses import get_loss

    try:
        return get_loss(cfg.loss, **cfg.loss_kwargs)
    except ValueError as err:
        raise UsageError(f"config: {err}") from None


class _Stop(Exception):
    """SIGTERM, turned into an exception so the loop checkpoints on the way out."""


class StudentAndProjections(nn.Module):
    """The trained modules behind one ``forward``, so DistributedDataParallel sees every parameter's use."""

    def __init__(self, student: Student, projections: nn.ModuleList):
        super().__init__()
        self.student = student
        self.projections = projections

    def forward(self, obs: torch.Tensor, game_ids: torch.Tensor,
                games: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``obs`` uint8 ``[len(games)*B, 4, 84, 84]``, ``B`` rows per game in ``games`` order ->
        logits ``[len(games)*B, 18]`` and, with feature regression, each game's projected
        student features ``[B, 512]`` (else ``[]``)."""
        h = self.student.features(obs)  # [len(games)*B, 512]
        logits = self.student.head(h, game_ids)
        if len(self.projections) == 0:
            return logits, []
        B = len(obs) // len(games)
        return logits, [self.projections[g](h[i * B:(i + 1) * B]) for i, g in enumerate(games)]


class Learner:
    """The gradient step: one update on ``B`` samples from each of this process's games.

    ``games`` are indices into ``cfg.games`` (all of them in one process, a rank's shard under
    torchrun), in the order of the batches given to :meth:`update`. The update runs on the
    student's device; ``masks`` and the batches may be on the CPU. Distributed, the modules are
    wrapped in DistributedDataParallel, whose backward averages the gradients over ranks; each
    rank's loss is scaled by :func:`amn.distributed.loss_scale`, so the average is the
    single-process gradient: the mean over all games.
    """

    def __init__(self, cfg: TrainConfig, student: Student, projections: nn.ModuleList, params: list,
                 optimizer: torch.optim.Optimizer, loss_fn, games: list[int], masks: torch.Tensor, stats: Scalars):
        self.cfg, self.params, self.optimizer, self.loss_fn, self.stats = cfg, params, optimizer, loss_fn, stats
        self.games = list(games)
        self.names = [g.game for g in cfg.games]
        self.device = next(student.parameters()).device
        B = cfg.batch_per_game
        self.batch_game_ids = torch.tensor(self.games, device=self.device).repeat_interleave(B)  # long [G*B]
        # bool [G*B, 18]: masks is [G, 18], in games order
        self.batch_masks = masks.to(self.device).repeat_interleave(B, dim=0)
        self.net: nn.Module = StudentAndProjections(student, projections)
        ddp = distributed.current()
        self.loss_scale = distributed.loss_scale(len(self.games), cfg.num_games, ddp.world_size)
        if ddp.enabled:
            # Distributed: a rank uses only its own games' projections; the others' are unused here.
            # On a GPU, DDP needs the rank's device (cuda:LOCAL_RANK); on the CPU, none.
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.net, device_ids=device_ids,
                                                           find_unused_parameters=cfg.feature_regression)

    def update_all(self, minibatches: list[list[dict[str, torch.Tensor]]], step: int) -> None:
        """The updates due at agent step ``step``, one per entry of ``minibatches``, in order."""
        for batches in minibatches:
            self.update(batches, step)

    def update(self, batches: list[dict[str, torch.Tensor]], step: int) -> None:
        """One gradient step on ``batches`` (one replay sample per game of ``self.games``, CPU tensors)."""
        cfg, stats, names, B = self.cfg, self.stats, self.names, self.cfg.batch_per_game
        # obs, target, values, features: to the student's device (no copy on the CPU).
        batches = [{k: v.to(self.device) for k, v in b.items()} for b in batches]
        obs = torch.cat([b["obs"] for b in batches])  # uint8 [G*B, 4, 84, 84]
        logits, projected = self.net(obs, self.batch_game_ids, self.games)  # [G*B, 18], G x [B, 512]
        policy_losses, feature_losses = [], []
        problem, failure = None, {}
        for i, (g, batch) in enumerate(zip(self.games, batches)):
            rows = slice(i * B, (i + 1) * B)
            z, mask = logits[rows], self.batch_masks[rows]
            if not torch.isfinite(z[mask]).all():
                problem = f"student logits are NaN/inf at agent step {step} in {names[g]}"
                failure = {"game": names[g]}
                break
            out = self.loss_fn(z, batch["target"], mask, batch.get("values"))
            loss_g = out.loss.mean()
            if not torch.isfinite(loss_g):
                bad = int((~torch.isfinite(out.loss)).sum())
                problem = (f"non-finite policy-regression loss ({loss_g.item()}) at agent step {step} "
                           f"in {names[g]} (loss {cfg.loss}): {bad} of {out.loss.numel()} rows non-finite")
                failure = {"game": names[g], "rows": out.loss.numel(), "nonfinite_rows": bad}
                break
            policy_losses.append(loss_g)
            stats.mean(f"{names[g]}/policy_regression_loss", loss_g.item())
            if cfg.normaliser_diagnostics and "ill_conditioned_rows" not in out.diagnostics:
                extra: dict[str, int] = {}
                with torch.no_grad():
                    cc_log_normaliser(z.detach(), mask=mask, diagnostics=extra)
                out.diagnostics["ill_conditioned_rows"] = extra["ill_conditioned_rows"]
            for key, count in out.diagnostics.items():
                stats.total(f"{names[g]}/loss_diag/{key}", float(count))
            with torch.no_grad():
                stats.mean(f"{names[g]}/student_entropy",
                           entropy(torch.softmax(masked_logits(z, mask), -1)).mean().item())
                stats.mean(f"{names[g]}/target_entropy", entropy(batch["target"]).mean().item())
            if cfg.feature_regression:
                fr = (projected[i] - batch["features"]).pow(2).sum(-1).mean()
                feature_losses.append(fr)
                stats.mean(f"{names[g]}/feature_regression_loss", fr.item())
        # Distributed: every rank stops here together, before the backward's all-reduce would wait forever.
        if distributed.any_rank(problem is not None):
            raise NonFiniteLoss(problem or f"non-finite loss on another rank at agent step {step}", step=step,
                                **failure)
        loss = torch.stack(policy_losses).mean()
        if feature_losses:
            loss = loss + cfg.feature_beta * torch.stack(feature_losses).mean()
        if self.loss_scale != 1.0:  # only when games are split unevenly across ranks
            loss = loss * self.loss_scale
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # distributed: gradients averaged over ranks when this returns
        grad_norm = nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        if not torch.isfinite(grad_norm):  # the same on every rank: the gradients are
            raise NonFiniteLoss(f"non-finite gradient norm at agent step {step} "
                                f"(games {', '.join(names[g] for g in self.games)})", step=step)
        self.optimizer.step()
        stats.mean("train/loss", loss.item())
        stats.mean("train/grad_norm", grad_norm.item())


def train(cfg: TrainConfig, run_dir: Path, *, resume: bool = False, progress: bool = True,
          evaluate: bool = True) -> dict[str, Any]:
    """Run (or resume) a student training run in ``run_dir``.

    Returns ``{"status": "finished"|"interrupted", "agent_steps", "updates", "run_dir",
    "evaluation"}``. Raises :class:`NonFiniteLoss` or ``UsageError``.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    # ---- setup ----------------------------------------------------------------------
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    ckpt = load_checkpoint(ckpt_path) if resume else None
    if not resume and ckpt_path.exists():
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    loss_fn = make_loss(cfg)
    # One process: every game. Distributed (torchrun): this rank's shard; rank 0 alone writes files.
    ddp = distributed.current()
    device = distributed.resolve_device(cfg.device, ddp.local_rank if ddp.enabled else None)
    local = distributed.shard_games(cfg.num_games, ddp.rank, ddp.world_size)  # indices into cfg.games
    # The experts stay on the CPU, also when the student trains on a GPU: they label into the CPU replays.
    experts = load_experts(cfg, local)  # in `local` order, like the replays and the collector's games
    run_dir.mkdir(parents=True, exist_ok=True)
    if ddp.is_main:
        save_config(cfg, run_dir / "config.yaml")
        print(f"run dir: {run_dir}" + (f" ({ddp.world_size} processes)" if ddp.enabled else ""), file=sys.stderr)
    G, B = cfg.num_games, cfg.batch_per_game
    student, projections, params, optimizer = build_student(cfg, device)
    # Acting and replay sampling: each rank its own stream (rank 0's is the single-process one).
    rng = np.random.default_rng(cfg.seed + 1_000_003 * ddp.rank)
    counters = {"lockstep_steps": 0, "agent_steps": 0, "updates": 0, "episodes": 0, "resumes": 0}
    if ckpt is not None:
        try:
            student.load_state_dict(ckpt["student"])
            projections.load_state_dict(ckpt["projections"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise UsageError(f"{ckpt_path} does not fit this config (games, heads or feature regression "
                             f"changed?): {str(err).splitlines()[0]}") from None
        counters.update(ckpt["counters"])
        counters["resumes"] += 1
        # Distributed checkpoints keep every rank's RNG: with the same world size each rank continues
        # its own streams; with another one rank 0 takes the first and the others start fresh.
        rng_states = ckpt.get("rng_per_rank", [ckpt["rng"]])
        if len(rng_states) == ddp.world_size:
            restore_rng(rng, rng_states[ddp.rank])
        elif ddp.is_main:
            restore_rng(rng, rng_states[0])

    replays = [GameReplay(cfg.replay_capacity_per_game, cfg.envs_per_game,
                          store_values=loss_fn.needs_expert_values,
                          feature_dim=FEATURE_DIM if cfg.feature_regression else 0) for _ in local]
    # Fresh games after a resume, so a resumed run does not replay the same episodes.
    collector = Collector(cfg, experts, replays, seed=cfg.seed + 7919 * counters["resumes"], game_indices=local,
                          device=device)
    games = [g.game for g in cfg.games]
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=counters["agent_steps"] or None) if ddp.is_main else None
    stats = Scalars()
    learner = Learner(cfg, student, projections, params, optimizer, loss_fn, local, collector.masks, stats)

    def checkpoint() -> None:
        # The unwrapped modules' state dicts (no DDP "module." prefix): loadable in either mode.
        # On a GPU their tensors are CUDA ones; load_checkpoint maps them to the CPU.
        payload = {
            "config": cfg.to_dict(), "student": student.state_dict(), "projections": projections.state_dict(),
            "optimizer": optimizer.state_dict(), "counters": dict(counters), "rng": rng_state(rng),
        }
        if ddp.enabled:  # a collective: every rank calls checkpoint() at the same step
            payload["rng_per_rank"] = distributed.all_gather(payload["rng"])
        if ddp.is_main:
            save_checkpoint(ckpt_path, payload)

    def evaluate_now() -> None:
        """Full games with the current student: TensorBoard and <run>/evaluations.jsonl."""
        from amn.evaluation import play_games, summarize
        from amn.report import student_actor

        step = counters["agent_steps"]
        results = []  # (game index, summary); distributed: each rank plays its own games, rank 0 writes all
        for g, expert in zip(local, experts):
            returns = play_games(student_actor(student, g, expert.action_set), games[g], cfg.eval_episodes,
                                 epsilon=cfg.eval_epsilon, sticky=cfg.eval_sticky, seed=cfg.seed + step,
                                 max_frames=cfg.eval_max_frames, progress=False)
            results.append((g, summarize(returns)))
        results = sorted((r for part in distributed.all_gather(results) for r in part), key=lambda r: r[0])
        if not ddp.is_main:
            return
        with (run_dir / "evaluations.jsonl").open("a") as f:
            for g, s in results:
                writer.add_scalar(f"{games[g]}/eval_return", s["mean"], step)
                f.write(json.dumps({"agent_steps": step, "frames": 4 * step, "game": games[g],
                                    "return_mean": s["mean"], "return_std": s["std"],
                                    "episodes": s["episodes"], "returns": s["returns"]}) + "\n")

    # ---- loop -----------------------------------------------------------------------
    # Summed over all games, so also over all ranks: every rank steps its games once per lockstep step.
    per_lockstep = cfg.agent_steps_per_lockstep
    started = time.monotonic()
    evaluated_at = counters["agent_steps"] // cfg.eval_every_agent_steps if cfg.eval_every_agent_steps else 0
    last_ckpt = last_log_time = time.monotonic()
    last_log_steps, last_log_updates = counters["agent_steps"], counters["updates"]
    latest_return = {g: float("nan") for g in games}
    status = "finished"
    previous_sigterm, previous_sigint = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop_requested = False

    def on_sigterm(signum, frame):
        nonlocal stop_requested
        if not ddp.enabled:
            raise _Stop()
        # Distributed: raising here could leave the other ranks waiting in a collective; instead
        # every rank stops at the end of the same lockstep step (see "agree" below).
        stop_requested = True

    signal.signal(signal.SIGTERM, on_sigterm)
    if ddp.enabled:  # Ctrl-C reaches every rank at a different point of the loop: same treatment
        signal.signal(signal.SIGINT, on_sigterm)
    # cfg.overlap_update: each step's updates run on a second thread while this one acts, steps the
    # games and labels (two cores: the student's backward beside the experts' forwards). The numbers
    # stay those of the sequential loop, whatever the thread timing: the minibatches are drawn before
    # the step stores anything, and the student acts through `actor`, a copy of its weights from
    # before the update. Without overlap, `actor` is the student and the update follows the step.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amn-update") if cfg.overlap_update else None
    actor = copy.deepcopy(student) if pool else student
    bar = tqdm(total=cfg.total_agent_steps, initial=counters["agent_steps"], unit="step", unit_scale=True,
               dynamic_ncols=True, disable=not progress or not ddp.is_main, desc=cfg.name, mininterval=1.0)
    try:
        while counters["agent_steps"] < cfg.total_agent_steps:
            steps_per_game = counters["agent_steps"] // G
            epsilon = cfg.epsilon_at(steps_per_game)
            # The updates due with this step: one per train_every_per_game agent steps of each game,
            # once every replay is warm. Their minibatches are drawn now, before this step's states
            # are stored, so the update may run while the games step.
            step = counters["agent_steps"] + per_lockstep
            due = (step // G) // cfg.train_every_per_game - steps_per_game // cfg.train_every_per_game
            if not all(len(r) >= cfg.learning_starts_per_game for r in replays):
                due = 0
            batches = [[r.sample(B, rng) for r in replays] for _ in range(due)]
            update = pool.submit(learner.update_all, batches, step) if pool and batches else None
            finished = collector.step(actor, epsilon, rng)  # act, step the games, label, store
            if update is not None:
                update.result()  # re-raises NonFiniteLoss from the update thread
                actor.load_state_dict(student.state_dict())
            elif batches:
                learner.update_all(batches, step)
            counters["updates"] += len(batches)
            for g, ret, length in finished:
                counters["episodes"] += 1
                latest_return[games[g]] = ret
                stats.mean(f"{games[g]}/episode_return", ret)
                stats.mean(f"{games[g]}/episode_length", length)
            counters["lockstep_steps"] += 1
            counters["agent_steps"] += per_lockstep
            bar.update(per_lockstep)

            if counters["agent_steps"] - last_log_steps >= cfg.log_every_agent_steps:
                now = time.monotonic()
                stats.mean("train/epsilon", epsilon)
                stats.mean("train/lr", optimizer.param_groups[0]["lr"])
                stats.mean("train/updates", counters["updates"])
                stats.mean("perf/agent_steps_per_s", (counters["agent_steps"] - last_log_steps) / (now - last_log_time))
                stats.mean("perf/updates_per_s", (counters["updates"] - last_log_updates) / (now - last_log_time))
                distributed.merge_scalars(stats)  # distributed: every rank's games into rank 0's stats
                if ddp.is_main:
                    stats.flush(writer, counters["agent_steps"])
                last_log_time, last_log_steps, last_log_updates = now, counters["agent_steps"], counters["updates"]
                bar.set_postfix({g: f"{r:.0f}" for g, r in latest_return.items()} | {"eps": f"{epsilon:.2f}"},
                                refresh=False)
            if cfg.eval_every_agent_steps and counters["agent_steps"] // cfg.eval_every_agent_steps > evaluated_at:
                evaluated_at = counters["agent_steps"] // cfg.eval_every_agent_steps
                evaluate_now()
            checkpoint_due = time.monotonic() - last_ckpt >= 60 * cfg.checkpoint_minutes
            out_of_time = cfg.max_minutes > 0 and time.monotonic() - started >= 60 * cfg.max_minutes
            if ddp.enabled:
                # Distributed: agree, so every rank takes the same branches at this step: rank 0's
                # clock decides checkpoints and the time limit, a signal on any rank stops all,
                # and the episode counter becomes the sum over all games. One small all-reduce.
                all_episodes, stops, checkpoint_due, out_of_time = distributed.all_reduce_sum(
                    [len(finished), int(stop_requested), int(checkpoint_due and ddp.is_main),
                     int(out_of_time and ddp.is_main)])
                counters["episodes"] += all_episodes - len(finished)
                if stops:
                    raise _Stop()
            if checkpoint_due:
                checkpoint()
                last_ckpt = time.monotonic()
            if out_of_time:
                print(f"max_minutes={cfg.max_minutes} reached at agent step {counters['agent_steps']:,}",
                      file=sys.stderr)
                break
        if cfg.eval_every_agent_steps and counters["agent_steps"] % cfg.eval_every_agent_steps:
            evaluate_now()  # the last point, where the run stopped
    except (KeyboardInterrupt, _Stop):
        status = "interrupted"
    finally:
        if pool is not None:
            pool.shutdown(wait=True)  # an update in flight finishes before anything is checkpointed
        signal.signal(signal.SIGTERM, previous_sigterm)
        if ddp.enabled:
            signal.signal(signal.SIGINT, previous_sigint)
        bar.close()
        collector.close()
        if writer is not None:
            writer.flush()
            writer.close()
    # Only reached without NonFiniteLoss: a diverged student is never written over the last good one.
    if ddp.enabled:
        record_ranks(run_dir, ddp, cfg, student, projections)
    checkpoint()
    distributed.barrier()  # no rank exits (and makes torchrun stop the others) before the file is written
    summary: dict[str, Any] = {"status": status, "run_dir": str(run_dir), **counters, "evaluation": None}
    if status == "finished" and evaluate and ddp.is_main:
        from amn.report import evaluate_run, format_table

        summary["evaluation"] = evaluate_run(run_dir, episodes=cfg.eval_episodes, epsilon=cfg.eval_epsilon,
                                             sticky=cfg.eval_sticky, json_path=run_dir / "evaluation.json",
                                             progress=progress)
        print(format_table(summary["evaluation"]))
    return summary


def record_ranks(run_dir: Path, ddp: distributed.DistInfo, cfg: TrainConfig, student: Student,
                 projections: nn.ModuleList) -> None:
    """Distributed: ``<run>/distributed.json`` (written by rank 0) says which rank had which games and
    every rank's parameter hash: DDP keeps the replicas identical, so the hashes must all be equal."""
    state = {**{f"student.{k}": v for k, v in student.state_dict().items()},
             **{f"projections.{k}": v for k, v in projections.state_dict().items()}}
    hashes = distributed.all_gather(distributed.state_hash(state))
    if not ddp.is_main:
        return
    shards = [[cfg.games[g].game for g in distributed.shard_games(cfg.num_games, r, ddp.world_size)]
              for r in range(ddp.world_size)]
    in_sync = len(set(hashes)) == 1
    (run_dir / "distributed.json").write_text(json.dumps(
        {"world_size": ddp.world_size, "games_per_rank": shards, "parameter_sha256_per_rank": hashes,
         "in_sync": in_sync}, indent=1) + "\n")
    if not in_sync:
        print(f"amn: warning: the ranks' parameters differ at the end of training ({run_dir}/distributed.json)",
              file=sys.stderr)


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> TrainConfig:
    """The resolved config saved in ``run_dir`` (for ``--resume``), with ``--set`` overrides."""
    import yaml

    from amn.config import apply_overrides

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UsageError(f"{run_dir} has no config.yaml: not a student run directory")
    data = apply_overrides(yaml.safe_load(path.read_text()), overrides or [])
    return from_dict(data)
