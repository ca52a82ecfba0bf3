"""The update: one gradient step of policy regression (and feature regression) on every game.

``build_student`` makes the student, its feature-regression projections and the optimiser;
``make_loss`` the configured student loss; :class:`Learner` runs the update, in the config's
``precision`` (``amn/precision.py``), and logs per game the loss, the normaliser diagnostics
and the mimicry numbers of the training batch (``amn/mimicry.py``), and ``perf/update_ms`` and
``perf/update_cpu_ms``, its own wall and thread CPU time per update.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from amn import distributed
from amn.config import TrainConfig
from amn.errors import NonFiniteLoss, UsageError
from amn.losses import cc_log_normaliser
from amn.precision import autocast
from amn.student import FEATURE_DIM, Student, entropy, masked_logits
from amn.tb import Scalars


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


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """The L2 norm of all of ``params``' gradients and, with ``0 < max_norm < inf``, the gradients
    scaled in place to a norm of at most ``max_norm`` (coefficient min(1, max_norm / (norm + 1e-6)),
    as ``nn.utils.clip_grad_norm_``).

    Method: the norm of the per-tensor norms in the gradients' dtype (as ``clip_grad_norm_``); only
    if that is not finite, again in float64. A float32 sum of squares overflows at a norm of ~1.8e19
    although every entry is finite (noel-m past a logit gap of ~45): torch's value is then inf, which
    stopped the run as non-finite, and its clipping coefficient (max_norm/inf: 0, or NaN for inf) wiped
    the gradient.
    Accuracy: torch's where it is finite; otherwise float64's, relative error ≤ ~n·2⁻⁵³ for n entries.
    Domain: finite for every finite gradient (its float64 norm is ≤ √n · 3.4e38); inf/NaN only for a
    non-finite one. Cost: the common case is one pass in float32 (the 4-game student's 1,693,362 parameters:
    0.21 ms on one core of the AMD EPYC, clip_grad_norm_ 0.33 ms, a float64 pass on every update 1.3 ms). Returns a scalar tensor
    (float64 when it took the second pass; 0 when no parameter has a gradient).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    # not clip_grad_norm_(params, inf): at an overflowed norm its coefficient inf/inf is NaN
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads]))
    if not torch.isfinite(norm):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach(), dtype=torch.float64)
                                                     for g in grads]))
    if 0 < max_norm < float("inf"):
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.detach().mul_(coef.to(g.dtype))
    return norm


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
    single-process gradient: the mean over all games. ``precision``: ``"float32"`` or
    ``"bfloat16"`` (resolved, :func:`amn.precision.resolve_precision`).
    """

    def __init__(self, cfg: TrainConfig, student: Student, projections: nn.ModuleList, params: list,
                 optimizer: torch.optim.Optimizer, loss_fn, games: list[int], masks: torch.Tensor, stats: Scalars,
                 precision: str = "float32"):
        self.cfg, self.params, self.optimizer, self.loss_fn, self.stats = cfg, params, optimizer, loss_fn, stats
        self.games = list(games)
        self.names = [g.game for g in cfg.games]
        self.device = next(student.parameters()).device
        # Adam's second moment v ← β₂·v + (1 − β₂)·g² is a float32 weighted mean of past g² (weights summing
        # below 1): below |g| = √max (1.84e19) it cannot overflow; above, it does once v has grown (a
        # steady 1e20 after 35 steps, 5e20 at the second), and that weight's steps are m/∞ = 0 from then
        # on, a silent freeze. _check_adam_can_take stops the run first.
        self.adam_safe = math.sqrt(torch.finfo(torch.float32).max)
        B = cfg.batch_per_game
        self.batch_game_ids = torch.tensor(self.games, device=self.device).repeat_interleave(B)  # long [G*B]
        # bool [G*B, 18]: masks is [G, 18], in games order
        self.batch_masks = masks.to(self.device).repeat_interleave(B, dim=0)
        self.net: nn.Module = StudentAndProjections(student, projections)
        self.precision = precision
        self.updates = 0
        # about once per log interval: updates come every train_every_per_game agent steps of each game
        self.grad_norm_every = max(1, cfg.log_every_agent_steps // (cfg.num_games * cfg.train_every_per_game)) \
            if cfg.log_every_agent_steps > 0 else 0
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
        # perf/update_ms: this update's wall time on its own thread (copies to the device, forward, loss,
        # backward, clipping, Adam), so the study can compare losses' costs on one machine. With
        # overlap_update it runs beside the acting, so it is the update's time under that load. On a GPU
        # the loss.item() after Adam's step waits for the stream, so its kernels are inside the time.
        # perf/update_cpu_ms: the CPU time of this thread over the same span (with torch_threads = 1 all
        # of the update's kernels run on it): wall − CPU is time it was ready but waited (the GIL, or
        # another thread on its core); CPU above the update's time alone is contention for caches.
        started, started_cpu = time.perf_counter(), time.thread_time()
        cfg, stats, names, B = self.cfg, self.stats, self.names, self.cfg.batch_per_game
        # obs, target, values, features: to the student's device (no copy on the CPU).
        batches = [{k: v.to(self.device) for k, v in b.items()} for b in batches]
        obs = torch.cat([b["obs"] for b in batches])  # uint8 [G*B, 4, 84, 84]
        # bfloat16: the convolutions and matrix products under autocast; the loss from float32 logits.
        with autocast(self.precision, self.device):
            logits, projected = self.net(obs, self.batch_game_ids, self.games)  # [G*B, 18], G x [B, 512]
        logits, projected = logits.float(), [p.float() for p in projected]
        self.updates += 1
        # once per log interval: each game's own policy-regression gradient norm (one backward each)
        per_game_norms = self.grad_norm_every > 0 and self.updates % self.grad_norm_every == 0
        policy_losses, feature_losses = [], []
        problem, failure = None, {}
        # The checks and the logged numbers are taken over all games' rows at once and read back in
        # one .tolist(): game by game they were ~25 small ops and 5 reads per game, 0.5 ms of the
        # update's 18.5 ms of CPU on the four-game default, and the update is the loop's bottleneck
        # (docs/speed.md). The problem reported is the first in game order, logits before loss.
        finite = (torch.isfinite(logits) | ~self.batch_masks).view(len(self.games), -1).all(1)  # [G]
        bad_logits = int(finite.logical_not().nonzero()[0]) if not bool(finite.all()) else len(self.games)
        for i, (g, batch) in enumerate(zip(self.games[:bad_logits], batches)):
            rows = slice(i * B, (i + 1) * B)
            z, mask = logits[rows], self.batch_masks[rows]
            out = self.loss_fn(z, batch["target"], mask, batch.get("values"))
            if tuple(out.loss.shape) != (B,):
                raise UsageError(f"loss {cfg.loss}: returned shape {list(out.loss.shape)}, expected [{B}]: "
                                 "one value per row of the batch (LossOutput.loss)")
            policy_losses.append(out.loss)
            if cfg.normaliser_diagnostics and "ill_conditioned_rows" not in out.diagnostics:
                extra: dict[str, int] = {}
                with torch.no_grad():
                    cc_log_normaliser(z.detach(), mask=mask, diagnostics=extra)
                out.diagnostics["ill_conditioned_rows"] = extra["ill_conditioned_rows"]
            for key, count in out.diagnostics.items():
                stats.total(f"{names[g]}/loss_diag/{key}", float(count))
            if cfg.feature_regression:
                fr = (projected[i] - batch["features"]).pow(2).sum(-1).mean()
                feature_losses.append(fr)
        per_row = torch.stack(policy_losses) if policy_losses else logits.new_zeros(0, B)  # [games checked, B]
        game_losses = per_row.mean(1)
        finite_loss = torch.isfinite(game_losses)
        if not bool(finite_loss.all()):
            i = int(finite_loss.logical_not().nonzero()[0])
            g, bad = self.games[i], int((~torch.isfinite(per_row[i])).sum())
            problem = (f"non-finite policy-regression loss ({game_losses[i].item()}) at agent step {step} "
                       f"in {names[g]} (loss {cfg.loss}): {bad} of {B} rows non-finite")
            failure = {"game": names[g], "rows": B, "nonfinite_rows": bad}
        elif bad_logits < len(self.games):
            g = self.games[bad_logits]
            problem, failure = f"student logits are NaN/inf at agent step {step} in {names[g]}", {"game": names[g]}
        else:
            self._log_batch_numbers(logits, batches, game_losses, feature_losses, per_game_norms)
        # Distributed: every rank stops here together, before the backward's all-reduce would wait forever.
        if distributed.any_rank(problem is not None):
            raise NonFiniteLoss(problem or f"non-finite loss on another rank at agent step {step}", step=step,
                                **failure)
        loss = game_losses.mean()
        if feature_losses:
            loss = loss + cfg.feature_beta * torch.stack(feature_losses).mean()
        if self.loss_scale != 1.0:  # only when games are split unevenly across ranks
            loss = loss * self.loss_scale
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # distributed: gradients averaged over ranks when this returns
        grad_norm = clip_grad_norm(self.params, cfg.max_grad_norm)
        if not torch.isfinite(grad_norm):  # the same on every rank: the gradients are
            raise NonFiniteLoss(f"non-finite gradient norm at agent step {step} "
                                f"(games {', '.join(names[g] for g in self.games)})", step=step)
        self._check_adam_can_take(grad_norm, step)
        self.optimizer.step()
        stats.mean("train/loss", loss.item())
        stats.mean("train/grad_norm", grad_norm.item())
        stats.mean("perf/update_ms", 1000.0 * (time.perf_counter() - started))
        stats.mean("perf/update_cpu_ms", 1000.0 * (time.thread_time() - started_cpu))

    def _log_batch_numbers(self, logits: torch.Tensor, batches: list[dict[str, torch.Tensor]],
                           game_losses: torch.Tensor, feature_losses: list[torch.Tensor], per_game_norms: bool) -> None:
        """Per game: the policy-regression loss, the student's and the target's entropy (nats), the
        training batch's top-1 agreement, the feature-regression loss and (``per_game_norms``) the norm
        of the game's own policy-regression gradient. ``logits`` ``[G*B, 18]``, ``game_losses`` ``[G]``."""
        G, names = len(self.games), self.names
        with torch.no_grad():
            target = torch.cat([b["target"] for b in batches])  # [G*B, 18], the replay's dtype
            masked = masked_logits(logits.detach(), self.batch_masks)
            rows = torch.stack([entropy(torch.softmax(masked, -1)), entropy(target.to(logits.dtype)),
                                (masked.argmax(-1) == target.argmax(-1)).to(logits.dtype)])  # [3, G*B]
            parts = [game_losses.detach()[None], rows.view(3, G, -1).mean(-1)]  # [1, G], [3, G]
            if feature_losses:
                parts.append(torch.stack(feature_losses).detach()[None])
            numbers = torch.cat(parts)  # [4 or 5, G]
        for g, column in zip(self.games, numbers.T.tolist()):
            for tag, value in zip(("policy_regression_loss", "student_entropy", "target_entropy",
                                   "mimic/agreement_train", "feature_regression_loss"), column):
                self.stats.mean(f"{names[g]}/{tag}", value)
        if per_game_norms:  # one backward per game, about once per log interval
            for g, loss_g in zip(self.games, game_losses):
                grads = torch.autograd.grad(loss_g, self.params, retain_graph=True, allow_unused=True)
                norm = torch.sqrt(sum(g_.double().pow(2).sum() for g_ in grads if g_ is not None))
                self.stats.mean(f"{names[g]}/mimic/grad_norm", float(norm))

    def _check_adam_can_take(self, grad_norm: torch.Tensor, step: int) -> None:
        """Stop, as for a non-finite loss, before Adam's step would overflow a float32 second moment
        (and freeze that weight). The norm (after clipping) bounds every entry, so below √max nothing is
        read; above, the next second moment is computed in float64 from the optimiser's state. The same
        on every rank: the gradients are all-reduced and the optimiser states are equal."""
        clip = self.cfg.max_grad_norm
        if min(float(grad_norm), clip if clip > 0 else math.inf) < self.adam_safe:
            return
        beta2, top = self.cfg.adam_betas[1], float(torch.finfo(torch.float32).max)
        for p in self.params:
            if p.grad is None:
                continue
            v = self.optimizer.state.get(p, {}).get("exp_avg_sq")
            g2 = p.grad.detach().double().pow(2)
            nxt = (1 - beta2) * g2 + (beta2 * v.double() if v is not None else 0.0)
            if float(nxt.max()) > top * (1 - 1e-6):  # float32's own rounding of the sum: a margin of ~16 ulps
                raise NonFiniteLoss(f"at agent step {step} a gradient entry of {float(p.grad.abs().max()):.3g} would "
                                    f"overflow Adam's float32 second moment (above {top:.3g}) and freeze that "
                                    f"weight; set max_grad_norm (e.g. 10) or use a bounded loss", step=step)
