"""``amn study`` configs: a grid of variants × seeds on one base config, checked strictly.

A study config is a YAML mapping (``configs/studies/*.yaml``)::

    name: pong                   # default: the file's stem
    base: configs/default.yaml   # a train-student config; a relative path is from the project root
    set: {total_agent_steps: 100000, eval_every_agent_steps: 20000}  # TrainConfig keys for every run
    seeds: [0, 1, 2]             # the reported seeds (of every variant without its own)
    tuning_seeds: [100]          # trained like the others, reported apart, never in the aggregates
    reference: ce                # probability of improvement is over this variant (default ce)
    expert_episodes: 10          # games each expert plays under the students' evaluation protocol
    bootstrap_reps: 2000         # stratified-bootstrap resamples behind every CI
    out: docs/results/pong       # default docs/results/<name>; relative to the project root
    runs_dir: runs/studies/pong  # default runs/studies/<name>; relative to the project root
    variants:                    # name -> the TrainConfig keys that make this variant
      ce: {loss: ce, seeds: [0, 1, 2, 3]}  # seeds: this variant's reported seeds, in place of the study's
      cc/guarded+scale: {loss: cc, normaliser: guarded, loss_options: {logit_scale: auto}}

A variant's ``seeds`` (optional) replace the study's reported seeds for that variant alone, so the
leaders of a first round can get more seeds; they are checked like the study's (distinct ints, none
a tuning seed). ``amn study --seeds`` replaces every reported seed, the variants' own included
(:meth:`Study.with_seeds`). Tuning seeds are common to all variants. Variant names may carry
their options, e.g. ``noel-param-m(alpha=1)``; :func:`run_slug` makes them directory names.

A run's config is the base file, then ``set``, then the variant's keys, then ``seed`` and
``name``; each layer replaces whole top-level keys (a variant's ``loss_options`` replaces the
base's mapping). The project root is the nearest ancestor of the study file holding a
``pyproject.toml`` (as for train-student configs, ``amn.config.find_project_root``).

Every variant runs on the same games, budget and evaluation protocol: those keys (and the
``seed`` and ``name`` the study sets) may not appear in a variant, so the comparison is at equal
data and the experts' scores, measured once under that protocol, fit every variant.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from amn.config import TrainConfig, find_project_root, from_dict
from amn.errors import UsageError

#: Study keys -> what they must be (for the error message).
KEYS: dict[str, str] = {
    "name": "a name (letters, digits, _ . -)", "base": "a train-student config path", "set": "a mapping",
    "seeds": "a list of distinct ints", "tuning_seeds": "a list of distinct ints", "reference": "a variant name",
    "expert_episodes": "an int > 0", "bootstrap_reps": "an int >= 100", "out": "a directory path",
    "runs_dir": "a directory path",
    "variants": "a mapping of variant name -> TrainConfig keys (and optionally its own seeds: [...])",
}
#: Keys a variant may not set: the study's, and those that must be equal across variants.
NOT_IN_VARIANTS = ("name", "seed", "games", "total_agent_steps", "eval_every_agent_steps", "eval_episodes",
                   "eval_epsilon", "eval_sticky", "eval_max_frames")
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+/=,()-]*")
#: Name characters that are awkward in a path or a shell word -> what a run directory name has instead.
SLUG_CHARS = {"/": "-", "(": "_", ")": "", "=": "-", ",": "_"}


@dataclass(frozen=True)
class Study:
    """A loaded, validated study; paths are absolute. ``variants`` keeps the file's order."""

    name: str
    path: Path
    base: Path
    base_data: dict[str, Any]
    set: dict[str, Any]
    seeds: list[int]
    tuning_seeds: list[int]
    reference: str
    expert_episodes: int
    bootstrap_reps: int
    out: Path
    runs_dir: Path
    variants: dict[str, dict[str, Any]]
    #: variant -> its own reported seeds (the variant's ``seeds:``); a variant not here has ``seeds``.
    variant_seeds: dict[str, list[int]] = field(default_factory=dict)

    def seeds_of(self, variant: str) -> list[int]:
        """The reported seeds of ``variant``: its own ``seeds:`` if it has them, else the study's."""
        return list(self.variant_seeds.get(variant, self.seeds))

    def all_seeds(self, variants: list[str] | None = None) -> list[int]:
        """Every reported seed of ``variants`` (default: all): the study's in its order, then the variants'
        own in the file's order. The plan runs them in this order, every variant of a seed at a time."""
        chosen = list(self.variants) if variants is None else list(variants)
        out: list[int] = []
        for s in [*self.seeds, *(s for v in chosen for s in self.seeds_of(v))]:
            if s not in out and any(s in self.seeds_of(v) for v in chosen):
                out.append(s)
        return out

    def run_config(self, variant: str, seed: int) -> TrainConfig:
        """The TrainConfig of one run (validated; expert paths resolved like ``load_config``)."""
        data = {**copy.deepcopy(self.base_data), **copy.deepcopy(self.set), **copy.deepcopy(self.variants[variant]),
                "seed": seed, "name": f"{self.name}-{run_slug(variant)}-seed{seed}"}
        try:
            return from_dict(data, base_dir=find_project_root(self.base.parent))
        except UsageError as err:
            raise UsageError(f"study {self.path}: variant {variant!r}: {err}") from None

    def with_seeds(self, seeds: list[int]) -> Study:
        """The same study with other reported seeds (``amn study --seeds``), for every variant: the CLI
        overrides the variants' own ``seeds:`` too, so a command line says all that will run."""
        _check_seeds(self.path, seeds, self.tuning_seeds)
        return replace(self, seeds=list(seeds), variant_seeds={})

    def select(self, only: list[str] | None) -> list[str]:
        """The variants to run and report: ``only`` (in the file's order) plus the reference,
        which every probability of improvement needs; all of them when ``only`` is empty."""
        if not only:
            return list(self.variants)
        unknown = [v for v in only if v not in self.variants]
        if unknown:
            raise UsageError(f"--only {unknown[0]!r} is not a variant of {self.path}; variants: "
                             f"{', '.join(self.variants)}")
        return [v for v in self.variants if v in only or v == self.reference]


def run_slug(variant: str) -> str:
    """The variant's part of a run directory name: ``cc/naive`` -> ``cc-naive``,
    ``rescaled-square(k=1,M=1)`` -> ``rescaled-square_k-1_M-1`` (:data:`SLUG_CHARS`)."""
    return "".join(SLUG_CHARS.get(c, c) for c in variant)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_seeds(path: Path, seeds: Any, tuning: Any) -> None:
    for key, value in (("seeds", seeds), ("tuning_seeds", tuning)):
        if not isinstance(value, list) or not all(_is_int(s) for s in value) or len(set(value)) != len(value):
            raise UsageError(f"study {path}: {key} must be {KEYS[key]}, got {value!r}")
    if not seeds:
        raise UsageError(f"study {path}: seeds is empty; list at least one reported seed, e.g. seeds: [0, 1, 2]")
    both = sorted(set(seeds) & set(tuning))
    if both:
        raise UsageError(f"study {path}: seed {both[0]} is in both seeds and tuning_seeds; a tuning seed is "
                         f"reported apart, so pick another one for it")


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"{what} {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path}: expected a mapping of keys to values")
    return data


def _check_variant(path: Path, name: Any, keys: Any) -> None:
    if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
        raise UsageError(f"study {path}: variant name {name!r} must be letters, digits and _ . + / = , ( ) - "
                         f"(starting with a letter or digit)")
    if not isinstance(keys, dict):
        raise UsageError(f"study {path}: variant {name!r} must be a mapping of TrainConfig keys "
                         f"(e.g. {{loss: cc, normaliser: guarded}}), got {keys!r}")
    fixed = [k for k in keys if k in NOT_IN_VARIANTS]
    if fixed:
        raise UsageError(f"study {path}: variant {name!r} sets {fixed[0]}, which every variant shares "
                         f"(or the study sets); put it under set: instead")


def _variant_seeds(path: Path, name: str, seeds: Any, tuning: list[int]) -> list[int]:
    """A variant's own ``seeds:``, checked like the study's: distinct ints, at least one, no tuning seed."""
    where = f"study {path}: variant {name!r}"
    if not isinstance(seeds, list) or not all(_is_int(s) for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"{where}: seeds must be a list of distinct ints (its reported seeds, e.g. seeds: [0, 1, 2]), "
                         f"got {seeds!r}")
    if not seeds:
        raise UsageError(f"{where}: seeds is empty; list at least one reported seed, or drop the key to use the "
                         f"study's seeds")
    both = sorted(set(seeds) & set(tuning))
    if both:
        raise UsageError(f"{where}: seed {both[0]} is in both its seeds and tuning_seeds; a tuning seed is "
                         f"reported apart, so pick another one for it")
    return list(seeds)


def load_study(path: str | Path) -> Study:
    """Read and validate a study config: every variant must build a valid TrainConfig and loss."""
    path = Path(path).resolve()
    data = _read_yaml(path, "study config")
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise UsageError(f"study {path}: unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    for key in ("base", "variants"):
        if key not in data:
            raise UsageError(f"study {path}: missing key {key!r} ({KEYS[key]})")
    root = find_project_root(path.parent)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise UsageError(f"study {path}: name must be {KEYS['name']}, got {name!r}")
    for key in ("base", "out", "runs_dir", "reference"):
        if key in data and not isinstance(data[key], str):
            raise UsageError(f"study {path}: {key} must be {KEYS[key]}, got {data[key]!r}")
    settings = data.get("set", {})
    if not isinstance(settings, dict):
        raise UsageError(f"study {path}: set must be a mapping of TrainConfig keys, got {settings!r}")
    if "seed" in settings or "name" in settings:
        raise UsageError(f"study {path}: set may not hold seed or name; the study sets them per run (seeds:)")
    seeds, tuning = data.get("seeds", [0, 1, 2]), data.get("tuning_seeds", [])
    _check_seeds(path, seeds, tuning)
    numbers = {"expert_episodes": (data.get("expert_episodes", 10), 1),
               "bootstrap_reps": (data.get("bootstrap_reps", 2000), 100)}
    for key, (value, low) in numbers.items():
        if not _is_int(value) or value < low:
            raise UsageError(f"study {path}: {key} must be {KEYS[key]}, got {value!r}")
    variants = data["variants"]
    if not isinstance(variants, dict) or not variants:
        raise UsageError(f"study {path}: variants must be {KEYS['variants']}, e.g. {{ce: {{loss: ce}}}}")
    slugs: dict[str, str] = {}
    variant_seeds: dict[str, list[int]] = {}
    for variant, keys in list(variants.items()):
        _check_variant(path, variant, keys)
        if "seeds" in keys:  # the study's key, not a TrainConfig one: the variant's keys keep only those
            keys = dict(keys)
            variant_seeds[variant] = _variant_seeds(path, variant, keys.pop("seeds"), list(tuning))
            variants[variant] = keys
        if run_slug(variant) in slugs:
            raise UsageError(f"study {path}: variants {slugs[run_slug(variant)]!r} and {variant!r} share the "
                             f"run directory name {run_slug(variant)!r}; rename one")
        slugs[run_slug(variant)] = variant
    reference = data.get("reference", "ce")
    if reference not in variants:
        raise UsageError(f"study {path}: the reference variant {reference!r} is not among the variants "
                         f"({', '.join(variants)}); add it or set reference: to one of them")
    base = Path(data["base"]).expanduser()
    base = base if base.is_absolute() else root / base
    base_data = _read_yaml(base, "base config")
    base_data.setdefault("name", base.stem)
    study = Study(name=name, path=path, base=base, base_data=base_data, set=settings, seeds=list(seeds),
                  tuning_seeds=list(tuning), reference=reference, expert_episodes=numbers["expert_episodes"][0],
                  bootstrap_reps=numbers["bootstrap_reps"][0],
                  out=_directory(root, data.get("out", f"docs/results/{name}")),
                  runs_dir=_directory(root, data.get("runs_dir", f"runs/studies/{name}")), variants=variants,
                  variant_seeds=variant_seeds)
    _validate_runs(study)
    return study


def _directory(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def _validate_runs(study: Study) -> None:
    """Build base + set alone, then every variant's config and loss, so a typo fails now, not hours in."""
    from amn.losses import get_loss

    try:
        from_dict({**copy.deepcopy(study.base_data), **copy.deepcopy(study.set)},
                  base_dir=find_project_root(study.base.parent))
    except UsageError as err:
        raise UsageError(f"study {study.path}: base {study.base} with set: {err}") from None
    for variant in study.variants:
        cfg = study.run_config(variant, study.seeds[0])
        try:
            get_loss(cfg.loss, **cfg.loss_kwargs)
        except (ValueError, TypeError) as err:
            raise UsageError(f"study {study.path}: variant {variant!r}: {err}") from None
        if cfg.eval_every_agent_steps <= 0:
            # The study's returns are the periodic evaluations (<run>/evaluations.jsonl).
            raise UsageError(f"study {study.path}: eval_every_agent_steps is {cfg.eval_every_agent_steps}; "
                             f"set it > 0 under set: (the study reads each run's returns from its evaluations)")
