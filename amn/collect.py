"""Data collection: the student acts in every game in lockstep, experts label at insertion.

Per lockstep step, for G games with n envs each:

1. one student forward over all ``G*n`` observations, ε-greedy over each game's
   valid actions (the 18 outputs masked to the game's minimal action set);
2. the actions are sent to the C++ envs, which step in their own threads while
3. each game's expert labels its ``n`` states in one batched forward (soft target
   ``softmax(Q_E/τ)`` scattered into the 18 slots, plus raw values / features
   when the loss or feature regression needs them) and the replay stores them;
4. the step results are received; episode returns and life losses tracked.

Training view of observations: the expert labels what it was trained to see. For
an rl-zoo expert a life loss starts a new frame stack (older frames zeroed), as
SB3's ``AtariWrapper`` + ``VecFrameStack`` showed it during training; an expert of
``amn experts train`` saw the stack go on (``Expert.life_loss_restarts_stack``;
``life_loss_boundary`` in the config overrides it for every game). The obs returned at
the life-loss step is the first of the new stack, like the obs returned at a
game-over step (SAME_STEP autoreset) is the first of the next game. Evaluation
uses the environment's stacks unchanged (full games).

Acting after a life loss: ``AtariWrapper`` also pressed FIRE for an rl-zoo expert after
each life loss (its reset after the life's "episode"), so it never learned to serve the
ball again, and a student learning from it would stall there until ε picked FIRE. For
those experts the collector presses FIRE on the agent step after a life loss, in place of
the student's action (``experts.atari.LifeLossFire``; that step is an agent step, its
state labelled and stored like any other). Experts of ``amn experts train`` press it
themselves, as they did in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from amn.config import TrainConfig
from amn.precision import autocast
from amn.replay import STACK, GameReplay
from amn.student import NUM_OUTPUTS, Student, masked_logits
from experts.atari import EnvSettings, GameTracker, LifeLossFire, life_loss_presses_fire, make_atari_vec


def action_mask(action_set: list[int]) -> torch.Tensor:
    """``bool [18]``: True at the game's valid actions (indices into the full action set)."""
    mask = torch.zeros(NUM_OUTPUTS, dtype=torch.bool)
    mask[action_set] = True
    return mask


@dataclass
class GameSlot:
    """Everything about one game during collection."""

    index: int  # into cfg.games (a distributed rank steps only some games)
    game: str
    expert: object  # experts.Expert
    env: object  # ale_py AtariVectorEnv
    replay: GameReplay
    action_set: np.ndarray  # int64 [A]: full-action index of each minimal action
    full_to_env: np.ndarray  # int64 [18]: minimal index of each full action (-1 if invalid)
    tracker: GameTracker
    life_loss_restarts_stack: bool  # the training view zeroes the frames before a life loss
    life_loss_fire: LifeLossFire | None  # presses FIRE after a life loss where the expert's pipeline did
    obs: np.ndarray = field(default=None)  # training view, uint8 [n, 4, 84, 84]
    starts: np.ndarray = field(default=None)  # bool [n]: obs starts a stack
    since_start: np.ndarray = field(default=None)  # int [n]: steps since the stack started
    returns: list[tuple[int, float]] = field(default_factory=list)  # (env, raw return) of each finished game


def load_experts(cfg: TrainConfig, indices: list[int] | None = None) -> list:
    """Load each game's expert (only games ``indices``, if given); one clear line if one is missing or wrong."""
    from amn.errors import UsageError
    from experts import load_expert

    out = []
    for g in (cfg.games if indices is None else [cfg.games[i] for i in indices]):
        try:
            expert = load_expert(g.expert, game=g.game)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"expert for {g.game}: {err}") from None
        if expert.game != g.game:
            raise UsageError(f"expert {g.expert!r} plays {expert.game}, but the config gives it to {g.game}")
        out.append(expert)
    return out


class Collector:
    """Steps every game's envs in lockstep with the student acting, filling the replays."""

    def __init__(self, cfg: TrainConfig, experts: list, replays: list[GameReplay], *, seed: int,
                 game_indices: list[int] | None = None, device: torch.device = torch.device("cpu"),
                 precision: str = "float32"):
        """``game_indices``: the games (indices into ``cfg.games``) this process steps, default all;
        a distributed rank passes its shard. ``experts``/``replays`` follow that order.
        ``device``: the student's; its forward runs there, everything else on the CPU.
        ``precision``: the student's forward (resolved, ``amn/precision.py``); experts label in float32."""
        self.precision = precision
        self.cfg = cfg
        self.n = cfg.envs_per_game
        settings = EnvSettings(sticky=cfg.sticky, noop_max=cfg.noop_max, max_frames=cfg.max_frames)
        self.slots: list[GameSlot] = []
        game_indices = list(range(cfg.num_games)) if game_indices is None else list(game_indices)
        for i, expert, replay in zip(game_indices, experts, replays):
            g = cfg.games[i]
            action_set = np.asarray(expert.action_set, dtype=np.int64)
            full_to_env = np.full(NUM_OUTPUTS, -1, dtype=np.int64)
            full_to_env[action_set] = np.arange(len(action_set))
            env = make_atari_vec(g.game, self.n, settings=settings, num_threads=1)
            restart = expert.life_loss_restarts_stack if cfg.life_loss_boundary is None else cfg.life_loss_boundary
            fire = (LifeLossFire.for_game(g.game, self.n, full_actions=True)
                    if life_loss_presses_fire(expert.observation_pipeline) else None)
            self.slots.append(GameSlot(i, g.game, expert, env, replay, action_set, full_to_env,
                                       GameTracker(self.n), restart, fire))
        self.device = device
        # Global game indices: they pick the student's head and seed the envs (seed + 1000 * index).
        self.game_ids = torch.tensor(game_indices, device=device).repeat_interleave(self.n)  # long [G*n]
        self.masks = torch.stack([action_mask(s.action_set.tolist()) for s in self.slots])  # CPU [G, 18]
        self.row_masks = self.masks.to(device).repeat_interleave(self.n, dim=0)  # bool [G*n, 18]
        self.reset(seed)

    def reset(self, seed: int) -> None:
        for s in self.slots:
            obs, info = s.env.reset(seed=seed + 1000 * s.index)
            s.tracker.reset(info["lives"])
            s.obs = obs.copy()
            s.starts = np.ones(self.n, dtype=bool)
            s.since_start = np.zeros(self.n, dtype=np.int64)
            if s.life_loss_fire is not None:
                s.life_loss_fire.reset()

    def act(self, student: Student, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """ε-greedy full-action indices ``int64 [G*n]``, always valid for each row's game."""
        obs = torch.from_numpy(np.concatenate([s.obs for s in self.slots])).to(self.device)
        with torch.inference_mode(), autocast(self.precision, self.device):
            greedy = masked_logits(student(obs, self.game_ids).float(), self.row_masks).argmax(1).cpu().numpy()
        random = np.concatenate([s.action_set[rng.integers(0, len(s.action_set), self.n)] for s in self.slots])
        explore = rng.random(len(greedy)) < epsilon
        return np.where(explore, random, greedy)

    def label_and_store(self, s: GameSlot) -> None:
        """The game's expert labels its current states once; the replay stores them.

        The expert runs on the CPU even when the student trains on a GPU: its labels go to the
        replay's CPU arrays."""
        cfg = self.cfg
        target = np.zeros((self.n, NUM_OUTPUTS), dtype=np.float32)
        values = None
        if s.replay.values is not None:
            q = s.expert.values(s.obs)
            target[:, s.action_set] = torch.softmax(q / cfg.temperature, dim=-1).numpy()
            values = np.zeros_like(target)
            values[:, s.action_set] = q.numpy()
        else:
            target[:, s.action_set] = s.expert.soft_policy(s.obs, cfg.temperature).numpy()
        features = s.expert.features(s.obs).numpy() if s.replay.features is not None else None
        s.replay.add(s.obs, s.starts, target, values, features)

    def step(self, student: Student, epsilon: float, rng: np.random.Generator) -> list[tuple[int, float, int]]:
        """One lockstep step. Returns ``(game index, return, length)`` of finished games."""
        actions = self.act(student, epsilon, rng).reshape(len(self.slots), self.n)
        for s, a in zip(self.slots, actions):
            if s.life_loss_fire is not None:
                a = s.life_loss_fire.override(a)  # after ε: the pipeline pressed it, not the agent
            s.env.send(s.full_to_env[a])
        # The envs step in their C++ threads while the experts label.
        for s in self.slots:
            self.label_and_store(s)
        finished = []
        for s in self.slots:
            obs, reward, terminated, truncated, info = s.env.recv()
            done, life_lost = s.tracker.update(reward, terminated, truncated, info["lives"])
            if s.life_loss_fire is not None:
                s.life_loss_fire.observe(life_lost)
            for env, ret, length in done:
                s.returns.append((env, ret))
                finished.append((s.index, ret, length))
            new_stack = terminated | truncated
            if s.life_loss_restarts_stack:
                new_stack = new_stack | life_lost
            s.since_start = np.where(new_stack, 0, np.minimum(s.since_start + 1, STACK - 1))
            s.starts = new_stack
            s.obs = self._training_view(obs, s.since_start)
        return finished

    @staticmethod
    def _training_view(obs: np.ndarray, since_start: np.ndarray) -> np.ndarray:
        """Copy of ``obs`` with frames from before the latest stack start zeroed."""
        view = obs.copy()
        for k in range(STACK - 1):
            # frame k is older than the start when since_start < STACK-1-k
            view[since_start < STACK - 1 - k, k] = 0
        return view

    def close(self) -> None:
        for s in self.slots:
            s.env.close()


class ExpertActor(torch.nn.Module):
    """An expert in the student's place: ``(obs uint8 [N, 4, 84, 84], game_ids) -> logits [N, 18]``
    holding its values at its game's actions (the collector masks the rest)."""

    def __init__(self, expert):
        super().__init__()
        self.expert = expert

    def forward(self, obs: torch.Tensor, game_ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(obs), NUM_OUTPUTS)
        logits[:, self.expert.action_set] = self.expert.values(obs)
        return logits


def play_through_collector(expert, episodes: int, *, epsilon: float = 0.01, seed: int = 0,
                           max_frames: int = 108_000) -> list[float]:
    """Raw full-game returns of ``expert`` acting ε-greedily in the student's data-collection
    environment, seeing the collector's training view: one side of the observation contract.

    One env per game, each counted once (its first game), so short games are not favoured.
    ``max_frames``: per-game cap in emulator frames (a capped game counts with its score so far).
    """
    from amn.config import GameConfig

    cfg = TrainConfig(games=[GameConfig(expert.game, expert.name)], envs_per_game=episodes, max_frames=max_frames)
    collector = Collector(cfg, [expert], [GameReplay(64 * episodes, episodes)], seed=seed)
    actor, rng = ExpertActor(expert), np.random.default_rng(seed)
    slot = collector.slots[0]
    try:
        while len({env for env, _ in slot.returns}) < episodes:
            collector.step(actor, epsilon, rng)
    finally:
        collector.close()
    first = {}
    for env, ret in slot.returns:
        first.setdefault(env, ret)
    return [first[env] for env in range(episodes)]
