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

Ctrl-C and SIGTERM never raise inside the loop: they set a flag that ends the run at the end of
the lockstep step, so the update in flight finishes (or raises) first; during the final
checkpoint they wait until the file is written. ``--resume`` checks are in ``amn/resume.py``.

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

import json
import signal
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from amn import distributed, mimicry
from amn import resume as resuming
from amn.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint
from amn.collect import Collector, load_experts
from amn.config import TrainConfig, save_config
from amn.errors import NonFiniteLoss, UsageError  # noqa: F401  (NonFiniteLoss: amn.trainer.NonFiniteLoss, as before)
from amn.heap import keep_freed_memory
from amn.learner import Learner, build_student, make_loss
from amn.overlap import UpdateThread
from amn.precision import describe, resolve_precision
from amn.replay import GameReplay
from amn.student import FEATURE_DIM, Student
from amn.threads import CorePlan
from amn.tb import Scalars


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM set :attr:`requested` until :meth:`restore` puts back the previous handlers.

    The handler never raises: an exception landing inside an update would lose its NonFiniteLoss
    (and checkpoint a diverged student), one landing in the final checkpoint would skip it, and,
    distributed, one rank raising would leave the others waiting in a collective. The training
    loop reads the flag at the end of each lockstep step instead (every rank at the same step).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = {s: signal.signal(s, self._request) for s in (signal.SIGINT, signal.SIGTERM)}

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def train(cfg: TrainConfig, run_dir: Path, *, resume: bool = False, progress: bool = True,
          evaluate: bool = True, on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a student training run in ``run_dir``.

    ``on_progress(agent_steps)`` is called after every lockstep step with the agent steps it
    made (``amn study`` draws one bar over many runs with it). Returns ``{"status":
    "finished"|"interrupted", "agent_steps", "updates", "run_dir", "evaluation"}``. Raises
    :class:`NonFiniteLoss` or ``UsageError``.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    # ---- setup ----------------------------------------------------------------------
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    ckpt = load_checkpoint(ckpt_path) if resume else None
    if not resume and ckpt_path.exists():
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    if ckpt is not None:  # before anything is loaded or written: refuse a config the checkpoint does not fit
        resuming.check_compatible(ckpt["config"], cfg, ckpt_path)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    loss_fn = make_loss(cfg)
    # One process: every game. Distributed (torchrun): this rank's shard; rank 0 alone writes files.
    ddp = distributed.current()
    device = distributed.resolve_device(cfg.device, ddp.local_rank if ddp.enabled else None)
    local = distributed.shard_games(cfg.num_games, ddp.rank, ddp.world_size)  # indices into cfg.games
    requested_precision = cfg.precision
    cfg.precision = resolve_precision(cfg.precision, device)  # recorded as chosen in config.yaml
    # The experts stay on the CPU, also when the student trains on a GPU: they label into the CPU replays.
    experts = load_experts(cfg, local)  # in `local` order, like the replays and the collector's games
    G, B = cfg.num_games, cfg.batch_per_game
    student, projections, params, optimizer = build_student(cfg, device)
    # Acting and replay sampling: each rank its own stream (rank 0's is the single-process one).
    rng = np.random.default_rng(cfg.seed + 1_000_003 * ddp.rank)
    counters = {"lockstep_steps": 0, "agent_steps": 0, "updates": 0, "episodes": 0, "resumes": 0}
    if ckpt is not None:  # weights, optimiser (with the config's lr, betas, eps), counters, RNG streams
        resuming.restore(ckpt, ckpt_path, cfg, student, projections, optimizer, counters, rng, ddp)
    # Written only once the checkpoint fits: a refused --resume leaves the run as it was.
    run_dir.mkdir(parents=True, exist_ok=True)
    if ddp.is_main:
        save_config(cfg, run_dir / "config.yaml")
        print(f"run dir: {run_dir}" + (f" ({ddp.world_size} processes)" if ddp.enabled else ""), file=sys.stderr)
        print(describe(cfg.precision, requested_precision, device), file=sys.stderr)
    # Each update's multi-MB temporaries on reused memory, not fresh pages (amn/heap.py).
    heap_line = keep_freed_memory()
    if ddp.is_main:
        print(heap_line, file=sys.stderr)
        if ckpt is not None:  # TensorBoard is purged back to the checkpoint's step below; so is the jsonl
            resuming.cut_evaluations(run_dir / "evaluations.jsonl", counters["agent_steps"])

    replays = [GameReplay(cfg.replay_capacity_per_game, cfg.envs_per_game,
                          store_values=loss_fn.needs_expert_values,
                          feature_dim=FEATURE_DIM if cfg.feature_regression else 0) for _ in local]
    # The update thread gets a core of its own, the main thread and the emulators the rest (amn/threads.py).
    cores = CorePlan(cfg.pin_threads and cfg.overlap_update and not ddp.enabled)
    cores.pin_main()  # before the collector's environments start their threads
    try:
        # Fresh games after a resume, so a resumed run does not replay the same episodes.
        collector = Collector(cfg, experts, replays, seed=cfg.seed + 7919 * counters["resumes"], game_indices=local,
                              device=device, precision=cfg.precision)
    except BaseException:
        cores.restore_main()
        raise
    # The same held-out states at every start of the run: their seed depends on the run's seed only.
    heldout = [mimicry.collect_heldout(e, cfg.games[g].game, cfg.heldout_states_per_game, seed=cfg.seed + 99_991 + g,
                                       epsilon=cfg.eval_epsilon, temperature=cfg.temperature)
               for g, e in zip(local, experts)] if cfg.heldout_states_per_game and cfg.mimicry_every_agent_steps else []
    games = [g.game for g in cfg.games]
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=counters["agent_steps"] or None) if ddp.is_main else None
    stats = Scalars()
    learner = Learner(cfg, student, projections, params, optimizer, loss_fn, local, collector.masks, stats,
                      precision=cfg.precision)

    def minibatches(agent_steps: int) -> list[list[dict[str, torch.Tensor]]]:
        """The minibatches of the updates due with the lockstep step from ``agent_steps``: one update
        per train_every_per_game agent steps of each game, once every replay is warm."""
        due = ((agent_steps + per_lockstep) // G) // cfg.train_every_per_game \
            - (agent_steps // G) // cfg.train_every_per_game
        if not all(len(r) >= cfg.learning_starts_per_game for r in replays):
            due = 0
        return [[r.sample(B, rng) for r in replays] for _ in range(due)]

    # The next step's minibatches with the rng's state from before them, when drawn early (below).
    early: list = []

    def checkpoint() -> None:
        if early:  # the checkpoint holds the rng as the sequential loop has it here; they are drawn again
            rng.bit_generator.state = early.pop()[1]
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
    mimicked_at = counters["agent_steps"] // cfg.mimicry_every_agent_steps if cfg.mimicry_every_agent_steps else 0
    latest_return = {g: float("nan") for g in games}
    status = "finished"

    def quiet_until_next_step(step: int) -> bool:
        """Whether nothing from the end of the step that ends at agent step ``step`` until the next
        step begins reads the student, the optimiser or the logged scalars (a log point, an
        evaluation, a checkpoint, the end) or talks to other ranks: then the next step's update may
        be queued behind this one. A signal or the clock can still come after this; the loop then
        acts on it one step later."""
        now = time.monotonic()
        return not (ddp.enabled or step >= cfg.total_agent_steps or signals.requested
                    or step - last_log_steps >= cfg.log_every_agent_steps
                    or (cfg.eval_every_agent_steps > 0 and step // cfg.eval_every_agent_steps > evaluated_at)
                    or now - last_ckpt >= 60 * cfg.checkpoint_minutes
                    or (cfg.max_minutes > 0 and now - started >= 60 * cfg.max_minutes))

    # cfg.overlap_update: each step's updates run on a second thread while this one acts, steps the
    # games and labels (two cores: the student's backward beside the experts' forwards), and the next
    # step's are queued behind them when nothing reads the student in between (amn/overlap.py). The
    # numbers stay those of the sequential loop, whatever the thread timing: the minibatches are drawn
    # before the step stores anything, and the student acts through `updates.actor`, a copy of its
    # weights from before the update. Without overlap the student acts, and the update follows the step.
    updates = UpdateThread(learner.update_all, student, cfg.precision,
                           cores.update_thread_initializer(cfg.torch_threads)) if cfg.overlap_update else None
    queued: list = []  # this step's minibatches when their updates were queued during the last step
    bar = tqdm(total=cfg.total_agent_steps, initial=counters["agent_steps"], unit="step", unit_scale=True,
               dynamic_ncols=True, disable=not progress or not ddp.is_main, desc=cfg.name, mininterval=1.0)
    signals = StopSignals()  # from here until the final checkpoint is written, a signal only sets a flag
    try:
        while counters["agent_steps"] < cfg.total_agent_steps:
            steps_per_game = counters["agent_steps"] // G
            epsilon = cfg.epsilon_at(steps_per_game)
            # The updates due with this step. Their minibatches are drawn before this step's states
            # are stored, so the update may run while the games step.
            step = counters["agent_steps"] + per_lockstep
            if queued:
                batches, queued = queued, []
            else:
                batches = early.pop()[0] if early else minibatches(counters["agent_steps"])
                if updates is not None and batches:
                    updates.submit(batches, step)
            finished = collector.step(updates.actor if updates else student, epsilon, rng)  # act, step, label, store
            if updates is not None and updates.in_flight:
                # The next step's minibatches while the update runs, not after it, when both threads
                # would wait for them (0.3-0.6 ms a step): this step's states are stored, and this draw
                # is the rng's next use in the sequential loop too.
                before = rng.bit_generator.state
                upcoming = minibatches(step)
                if upcoming and quiet_until_next_step(step):
                    # Queued now, the update thread goes from this update straight to the next.
                    updates.submit(upcoming, step + per_lockstep)
                    queued = upcoming
                else:
                    early.append((upcoming, before))
                updates.wait()  # this step's updates; re-raises NonFiniteLoss from the update thread
            elif batches:
                learner.update_all(batches, step)
            counters["updates"] += len(batches)
            # A queued update may be logging meanwhile, but into other tags: no two += touch one entry.
            for g, ret, length in finished:
                counters["episodes"] += 1
                latest_return[games[g]] = ret
                stats.mean(f"{games[g]}/episode_return", ret)
                stats.mean(f"{games[g]}/episode_length", length)
            counters["lockstep_steps"] += 1
            counters["agent_steps"] += per_lockstep
            bar.update(per_lockstep)
            if on_progress is not None:
                on_progress(per_lockstep)

            if counters["agent_steps"] - last_log_steps >= cfg.log_every_agent_steps:
                now = time.monotonic()
                stats.mean("train/epsilon", epsilon)
                stats.mean("train/lr", optimizer.param_groups[0]["lr"])
                stats.mean("train/updates", counters["updates"])
                stats.mean("perf/agent_steps_per_s", (counters["agent_steps"] - last_log_steps) / (now - last_log_time))
                stats.mean("perf/updates_per_s", (counters["updates"] - last_log_updates) / (now - last_log_time))
                if heldout and counters["agent_steps"] // cfg.mimicry_every_agent_steps > mimicked_at:
                    mimicked_at = counters["agent_steps"] // cfg.mimicry_every_agent_steps
                    for g, h in zip(local, heldout):  # float32, the weights after this step's updates
                        for key, value in mimicry.heldout_diagnostics(student, h, g, loss_fn).items():
                            stats.mean(f"{games[g]}/mimic/{key}", value)
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
            stop = signals.requested
            if ddp.enabled:
                # Distributed: agree, so every rank takes the same branches at this step: rank 0's
                # clock decides checkpoints and the time limit, a signal on any rank stops all,
                # and the episode counter becomes the sum over all games. One small all-reduce.
                all_episodes, stop, checkpoint_due, out_of_time = distributed.all_reduce_sum(
                    [len(finished), int(stop), int(checkpoint_due and ddp.is_main),
                     int(out_of_time and ddp.is_main)])
                counters["episodes"] += all_episodes - len(finished)
            if queued and (stop or checkpoint_due or out_of_time):
                continue  # they came after the next update was queued: the next step queues none, and acts on them
            if stop:  # Ctrl-C/SIGTERM: this step is complete; the final checkpoint below covers it
                status = "interrupted"
                break
            if checkpoint_due:
                checkpoint()
                last_ckpt = time.monotonic()
            if out_of_time:
                print(f"max_minutes={cfg.max_minutes} reached at agent step {counters['agent_steps']:,}",
                      file=sys.stderr)
                break
        if status == "finished" and cfg.eval_every_agent_steps and counters["agent_steps"] % cfg.eval_every_agent_steps:
            evaluate_now()  # the last point, where the run stopped
    except BaseException:  # NonFiniteLoss above all: nothing is checkpointed, signals act as before
        signals.restore()
        raise
    finally:
        if updates is not None:  # in the loop every update's result is collected; this is for other errors
            updates.close()
        bar.close()
        collector.close()
        cores.restore_main()
        if writer is not None:
            writer.flush()
            writer.close()
    # Only reached without NonFiniteLoss: a diverged student is never written over the last good one.
    try:
        if ddp.enabled:
            record_ranks(run_dir, ddp, cfg, student, projections)
        checkpoint()
        distributed.barrier()  # no rank exits (and makes torchrun stop the others) before the file is written
    finally:
        signals.restore()
    if signals.requested:  # also a signal after the last step: the checkpoint is written, skip the evaluation
        status = "interrupted"
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
