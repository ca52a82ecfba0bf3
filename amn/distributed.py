"""Multi-process training with ``torchrun``: one process per rank, the games sharded across ranks.

``torchrun --nproc-per-node N -m amn train-student --config ...`` starts N processes with
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (and the rendezvous address) in their environment.
Each rank owns the environments, replay memories and experts of its games
(:func:`shard_games`, round-robin); the student is wrapped in
``DistributedDataParallel``, so every update averages the gradients over all games.
Rank 0 alone writes TensorBoard, checkpoints and the evaluation.

Devices (:func:`resolve_device`): on CPU the ranks talk over gloo; with ``device: cuda`` each
rank trains on ``cuda:{LOCAL_RANK}`` (one GPU per process of a node) and they talk over nccl.

Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing here does anything: every helper
returns its local value, so the single-process trainer runs exactly as before.

Every collective below must be called by all ranks at the same point of the loop; the
trainer only calls them at points every rank reaches at the same step (the step counters
advance identically on every rank because the ranks step in lockstep).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from amn.errors import UsageError

# Rank 0 evaluates/checkpoints while the others wait in the next collective; allow for a long
# periodic evaluation (a rank plays eval_episodes full games of each of its games).
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` in ``[0, world_size)``; ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_local_rank() -> int | None:
    """``LOCAL_RANK`` when torchrun started this process with ``WORLD_SIZE > 1``; None in a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """The device a training process uses for the config's ``device`` (validated syntax).

    ``cpu``; ``auto``: ``cuda`` if ``torch.cuda.is_available()``, else ``cpu``; ``cuda``: GPU 0 in
    a single process, and under torchrun (``local_rank`` given) ``cuda:{local_rank}``, one GPU per
    process of a node (pick the node's GPUs with ``CUDA_VISIBLE_DEVICES``); ``cuda:N``: GPU N, single
    process only (under torchrun every rank would share it, which nccl refuses). UsageError when
    CUDA or the GPU is missing.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(f"config: device={spec} but torch.cuda.is_available() is False (CPU-only torch build "
                         f"or no GPU); use device: cpu or auto (--set device=cpu)")
    requested = torch.device(spec)
    if local_rank is None:
        index = requested.index or 0
    elif requested.index is None:
        index = local_rank
    else:
        raise UsageError(f"config: device={spec} under torchrun, where each rank uses cuda:LOCAL_RANK; "
                         f"use device: cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)")
    visible = torch.cuda.device_count()
    if index >= visible:
        wanted = f"device={spec}" if local_rank is None else f"LOCAL_RANK {local_rank} (device=cuda)"
        raise UsageError(f"config: {wanted} needs cuda:{index} but only {visible} GPU(s) are visible; "
                         f"use fewer processes per node or another device")
    return torch.device("cuda", index)


def backend_for(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU ones."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(device: torch.device = torch.device("cpu")) -> DistInfo:
    """Join the process group when launched by torchrun with ``WORLD_SIZE > 1``; else single process.

    ``device`` is this rank's training device (:func:`resolve_device`): it picks the backend.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    if device.type == "cuda":
        # nccl's barrier and all_gather_object run on the current GPU: this rank's own.
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # env:// rendezvous: torchrun sets MASTER_ADDR/MASTER_PORT (c10d rendezvous across nodes).
        dist.init_process_group(backend_for(device), timeout=TIMEOUT)
    return current()


def current() -> DistInfo:
    """This process's place in the initialised process group (single process if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_games(num_games: int, rank: int, world_size: int) -> list[int]:
    """Global indices of the games rank ``rank`` owns: round-robin, ``rank, rank+W, ...``.

    An uneven split is fine (3 games on 2 ranks: ``[0, 2]`` and ``[1]``): :func:`loss_scale`
    keeps the update equal to the single-process one. More ranks than games is refused.
    """
    if world_size > num_games:
        games = "1 game" if num_games == 1 else f"{num_games} games"
        raise UsageError(f"{world_size} processes but only {games}: every rank needs at least one "
                         f"game; use --nproc-per-node/--nnodes with at most {num_games} processes in all")
    return list(range(rank, num_games, world_size))


def loss_scale(num_local_games: int, num_games: int, world_size: int) -> float:
    """Factor on a rank's mean-over-its-games loss so DDP's average over ranks is the mean over all games.

    DDP averages gradients: ``(1/W) Σ_r ∇L_r``. With ``L_r = s_r · (1/G_r) Σ_{g∈r} l_g`` and
    ``s_r = W·G_r/G`` that is ``(1/G) Σ_g ∇l_g``, the single-process gradient. 1.0 when even.
    """
    return world_size * num_local_games / num_games


def _collective_device() -> torch.device:
    """Where tensors for a collective live: nccl reduces only CUDA tensors (this rank's GPU, set by
    :func:`init_from_env`), gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[int]) -> list[int]:
    """Element-wise sum over ranks of a few integers (one small all-reduce); identity in one process."""
    if not current().enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any rank."""
    return all_reduce_sum([int(flag)])[0] > 0


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in one process."""
    if not current().enabled:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names and values (layout-independent): equal ⇔ bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def merge_scalars(stats) -> None:
    """Fold every rank's pending ``amn.tb.Scalars`` into rank 0's (the others start over).

    Means stay means: sums and counts add up, so a tag every rank logs once per update
    (``train/loss``) becomes the average over ranks, and per-game tags keep their own game's values.
    """
    if not current().enabled:
        return
    parts = all_gather((dict(stats.sums), dict(stats.counts), dict(stats.totals)))
    stats.__init__()
    if current().is_main:
        for sums, counts, totals in parts:
            for tag, value in sums.items():
                stats.sums[tag] += value
                stats.counts[tag] += counts[tag]
            for tag, value in totals.items():
                stats.totals[tag] += value
