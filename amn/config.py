"""Student training configuration: a dataclass, loaded from YAML, checked strictly.

A config file is a YAML mapping whose keys are the fields of :class:`TrainConfig`
(``games`` is a list of ``{game, expert}`` mappings). ``--set key=value``
overrides a field after loading; the value is parsed as YAML, and dotted keys
reach into mappings (``--set loss_options.scale=2``).

Step units are explicit in the names:

- a *lockstep step* steps every game's environments once;
- ``agent_steps`` counts agent decisions, summed over all games and envs
  (one lockstep step = ``num_games * envs_per_game`` agent steps);
- ``*_per_game`` counts agent steps of one game;
- a *frame* is one emulator frame: ``frames = 4 * agent_steps`` (frameskip 4).

Expert specs are a shipped name, a registered name, or a path. A spec is a path
when it contains a ``/`` or ends with ``.zip``/``.pt``; a relative path is
resolved against the *project root*: the nearest ancestor of the config file
that holds a ``pyproject.toml`` (so ``configs/smoke.yaml`` can say
``../shared/experts/x.zip`` meaning ``<repo>/../shared/experts/x.zip``), or the
config file's own directory when there is no such ancestor.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amn.errors import UsageError


@dataclass
class GameConfig:
    """One game of the multi-task student and the expert that labels it."""

    game: str
    expert: str


@dataclass
class TrainConfig:
    """Everything a student training run depends on. Defaults follow the Actor-Mimic code (except Adam's betas/eps)."""

    name: str = "default"
    games: list[GameConfig] = field(default_factory=lambda: [GameConfig("Pong", "pong")])

    # Policy regression: the loss between the expert's soft target and the student.
    loss: str = "ce"
    normaliser: str | None = None  # cc only: guarded | naive | authors
    loss_options: dict[str, Any] = field(default_factory=dict)
    # Count, for any loss, the rows whose CC normaliser the naive closed form gets wrong
    # (<Game>/loss_diag/ill_conditioned_rows); cc losses always report it.
    normaliser_diagnostics: bool = False
    temperature: float = 1.0  # τ: soft target = softmax(Q_E / τ) over the game's actions

    # Feature regression (Actor-Mimic eq. 5): β ‖f_i(h_student) − h_expert‖², f_i linear per game.
    feature_regression: bool = False
    feature_beta: float = 0.01

    # Student network.
    per_game_heads: bool = False

    # Budget and schedule (see the module docstring for the units).
    total_agent_steps: int = 4_000_000  # summed over games: the run's budget
    learning_starts_per_game: int = 10_000  # updates start once every replay holds this many
    train_every_per_game: int = 4  # one update per this many agent steps of each game
    batch_per_game: int = 8  # each minibatch holds this many samples of every game
    replay_capacity_per_game: int = 100_000

    # Optimiser: Adam, lr 2.5e-4 as in the Actor-Mimic code, torch's betas. eps matters most:
    # - the Lua code's 0.01 stalls a per-sample-mean loss (eps dwarfs sqrt(v); 300 steps on 64
    #   fixed Pong samples: CE 1.794 -> 1.782), and after 60k Pong steps the student's logits
    #   barely depended on the screen (std across states 0.01-0.03);
    # - 1e-8 makes Adam a sign-like update that killed the student's ReLUs on Pong's nearly
    #   constant frames (444-459 of 512 features dead, logits identical for every state);
    # - 3e-4 (≈ 0.01 on a loss summed over ~32 samples, the DQN-lineage convention) kept it alive
    #   (207 dead) and the student scored -10 within a 20k-frame cap after 30k agent steps.
    # Set adam_eps=0.01 and adam_betas=[0.95, 0.95] to reproduce the Lua optimiser exactly.
    lr: float = 2.5e-4
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 3e-4
    max_grad_norm: float = 0.0  # 0 = no clipping (the norm is logged either way)

    # Acting: ε-greedy over the student's masked policy.
    epsilon: float = 0.1  # final / fixed ε
    epsilon_start: float = 1.0  # used only when epsilon_decay_agent_steps_per_game > 0
    epsilon_decay_agent_steps_per_game: int = 0  # 0 = ε fixed at `epsilon`

    # Environments (experts' pipeline: experts.atari.make_atari_vec).
    envs_per_game: int = 1
    sticky: bool = False
    noop_max: int = 30
    max_frames: int = 108_000  # per-game cap in emulator frames (ALE's default); a capped game ends as a game over
    # Does a life loss start a new frame stack in the training view (training only)? None: as each
    # game's expert was trained (rl-zoo agents: yes, SB3's AtariWrapper; `amn experts train`: no).
    life_loss_boundary: bool | None = None

    # Evaluation at the end of the run (full games, raw scores).
    eval_episodes: int = 8
    eval_epsilon: float = 0.05
    eval_sticky: bool = False
    eval_max_frames: int = 108_000  # per-game cap in emulator frames (ALE's default)
    # > 0: also evaluate this often during training (agent steps, summed over games):
    # <Game>/eval_return in TensorBoard and one JSON line per game in <run>/evaluations.jsonl.
    eval_every_agent_steps: int = 0
    max_minutes: float = 0.0  # > 0: stop training after this much wall time (then evaluate as usual)

    # Bookkeeping.
    seed: int = 0
    # 1 thread: on 2 shared cores a 2-thread torch collapses ~10x when another job holds a core
    # (measured with scripts/bench_trainer.py); 0 = torch's default.
    torch_threads: int = 1
    # Run each update on a second thread while this one acts, steps the games and labels: on two
    # cores the student's backward and the experts' forwards run side by side, and the next update
    # is queued behind the one in flight. The same algorithm and the same numbers as False
    # (amn/overlap.py says why); False runs them one after the other.
    overlap_update: bool = True
    # With overlap_update, the update thread gets a core of its own (amn/threads.py; Linux,
    # single process, >= 2 cores): +8-14 % agent steps/s on 2 cores.
    pin_threads: bool = True
    # Where the student trains: cpu | cuda | cuda:N | auto (cuda if available, else cpu). Under
    # torchrun, cuda puts each rank on cuda:LOCAL_RANK (amn.distributed.resolve_device); the experts
    # and the replays stay on the CPU either way.
    device: str = "cpu"
    # The student's arithmetic (amn/precision.py): auto | float32 | bfloat16. auto takes bfloat16
    # where the device has bfloat16 units (CPU: AVX-512-BF16 or AMX) and is resolved, printed and
    # recorded in the run's config.yaml when training starts. Experts always label in float32.
    precision: str = "auto"
    # Mimicry diagnostics (amn/mimicry.py): expert-labelled held-out states per game, scored every
    # this many agent steps (summed over games); 0 turns the held-out scoring off.
    heldout_states_per_game: int = 256
    mimicry_every_agent_steps: int = 10_000
    checkpoint_minutes: float = 5.0
    log_every_agent_steps: int = 2_000

    # -- derived ---------------------------------------------------------------
    @property
    def num_games(self) -> int:
        return len(self.games)

    @property
    def agent_steps_per_lockstep(self) -> int:
        return self.num_games * self.envs_per_game

    @property
    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``amn.losses.get_loss``."""
        kwargs = dict(self.loss_options)
        if self.normaliser is not None:
            kwargs["normaliser"] = self.normaliser
        return kwargs

    def epsilon_at(self, agent_steps_per_game: int) -> float:
        """ε after this many agent steps of each game (linear schedule, or fixed)."""
        if self.epsilon_decay_agent_steps_per_game <= 0:
            return self.epsilon
        frac = agent_steps_per_game / self.epsilon_decay_agent_steps_per_game
        if frac >= 1.0:
            return self.epsilon
        return self.epsilon_start + frac * (self.epsilon - self.epsilon_start)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------
# Strict conversion from plain YAML data


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it; raise UsageError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if origin is list:
        if not isinstance(value, list):
            raise UsageError(f"config: {where} must be a list of {_type_name(args[0])}, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"config: {where} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UsageError(f"config: {where} must be a mapping with keys {_field_names(tp)}, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise UsageError(f"config: {where} expects bool (true/false), got {value!r}")
        return value
    if tp in (int, float) and isinstance(value, str):
        # PyYAML reads 1e6 (no dot) as a string; accept numbers written that way.
        try:
            value = float(value)
        except ValueError:
            raise UsageError(f"config: {where} expects {tp.__name__}, got {value!r}") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            # 1e6 in YAML is a string and 1.0e6 a float: accept integral floats, nothing else.
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UsageError(f"config: {where} expects int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"config: {where} expects float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UsageError(f"config: {where} expects str, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r}")  # a bug here, not a user error


def _field_names(cls) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _build(cls, data: dict[str, Any], where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}: " if where else ""
        raise UsageError(
            f"config: {prefix}unknown key {unknown[0]!r}; valid keys: {_field_names(cls)}"
        )
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise UsageError(f"config: {where or cls.__name__}: {err}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (value parsed as YAML; dotted keys reach into mappings)."""
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {key}: {p!r} is not a mapping")
        node[leaf] = value
    return data


def find_project_root(start: Path) -> Path:
    """Nearest ancestor of ``start`` holding a ``pyproject.toml``, else ``start`` itself."""
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / "pyproject.toml").is_file():
            return d
    return start


def is_path_spec(spec: str) -> bool:
    return "/" in spec or spec.endswith((".zip", ".pt"))


def from_dict(data: dict[str, Any], *, base_dir: Path | None = None) -> TrainConfig:
    """Build and validate a config; resolve relative expert paths against ``base_dir``."""
    if not isinstance(data, dict):
        raise UsageError(f"config: expected a mapping of keys to values, got {type(data).__name__}")
    cfg = _build(TrainConfig, data, "")
    validate(cfg)
    if base_dir is not None:
        for g in cfg.games:
            if is_path_spec(g.expert) and not Path(g.expert).expanduser().is_absolute():
                g.expert = str((base_dir / g.expert).resolve())
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Checks that need more than types. Games are canonicalised in place."""
    from experts.atari import canonical_game

    if not cfg.games:
        raise UsageError("config: games is empty; list at least one {game, expert}")
    seen = set()
    for g in cfg.games:
        try:
            g.game = canonical_game(g.game)
        except ValueError as err:
            raise UsageError(f"config: {err}") from None
        if g.game in seen:
            raise UsageError(f"config: game {g.game} listed twice")
        seen.add(g.game)
    positive = ["total_agent_steps", "train_every_per_game", "batch_per_game",
                "replay_capacity_per_game", "envs_per_game", "eval_episodes", "log_every_agent_steps", "eval_max_frames",
                "max_frames"]
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise UsageError(f"config: {name} must be > 0, got {getattr(cfg, name)}")
    if cfg.learning_starts_per_game < cfg.batch_per_game:
        raise UsageError("config: learning_starts_per_game must be >= batch_per_game")
    if cfg.replay_capacity_per_game < cfg.learning_starts_per_game + 4 * cfg.envs_per_game:
        raise UsageError("config: replay_capacity_per_game must exceed learning_starts_per_game")
    if cfg.lr <= 0 or cfg.temperature <= 0:
        raise UsageError("config: lr and temperature must be > 0")
    if len(cfg.adam_betas) != 2:
        raise UsageError("config: adam_betas must be a list of two floats")
    for name in ("epsilon", "epsilon_start", "eval_epsilon"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise UsageError(f"config: {name} must be in [0, 1]")
    # Only the spelling: whether this machine has the GPU is checked when training starts
    # (amn.distributed.resolve_device), so a GPU run's checkpoint still evaluates on a CPU machine.
    if not re.fullmatch(r"cpu|cuda(:\d+)?|auto", cfg.device):
        raise UsageError(f"config: device must be cpu, cuda, cuda:N or auto, got {cfg.device!r}")
    from amn.precision import PRECISIONS

    if cfg.precision not in PRECISIONS:
        raise UsageError(f"config: precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    for name in ("heldout_states_per_game", "mimicry_every_agent_steps"):
        if getattr(cfg, name) < 0:
            raise UsageError(f"config: {name} must be >= 0 (0 turns it off), got {getattr(cfg, name)}")


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config, apply ``--set`` overrides, validate. ``name`` defaults to the file stem."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"config {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"config {path}: expected a mapping of keys to values")
    data.setdefault("name", path.stem)
    data = apply_overrides(data, overrides or [])
    return from_dict(data, base_dir=find_project_root(path.parent))


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
