"""``amn experts train|evaluate|list|import|export|fetch``."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

HUB_HOST = ("huggingface.co", 443)


def _train(args: argparse.Namespace) -> None:
    from experts.train import train_expert

    path = train_expert(args.game, algo=args.algo, steps=args.steps, out=args.out,
                        resume=args.resume, seed=args.seed,
                        checkpoint_minutes=args.checkpoint_minutes)
    print(f"model: {path}" if path.exists() else "stopped before the end: run again with --resume")


def _command_line() -> str:
    return "amn " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _protocol(epsilon: float, sticky: bool, seed: int, max_frames: int = 108_000, policy: str = "greedy") -> str:
    acting = "actions sampled from the policy, " if policy == "sample" else ""
    return (f"full games, raw score, {acting}epsilon {epsilon}, "
            f"{'sticky actions 0.25' if sticky else 'no sticky actions'}, "
            f"up to 30 no-op starts, {max_frames:,}-frame cap, ale_py.AtariVectorEnv, seed {seed}")


def _evaluate(args: argparse.Namespace) -> None:
    import torch

    from experts import load_expert

    from amn.video import check_video_args

    check_video_args(args)  # before any game is played
    if args.episodes < 0:
        raise ValueError(f"--episodes must be >= 0, got {args.episodes}")
    torch.set_num_threads(args.threads)
    expert = load_expert(args.expert, game=args.game)
    # The zoo samples its Atari policies without ε; greedy play keeps a small ε against stuck states.
    epsilon = args.epsilon if args.epsilon is not None else (0.0 if args.policy == "sample" else 0.01)
    if args.episodes > 0:
        _score(args, expert, epsilon)
    if args.video is not None:
        from amn.video import describe, record_expert

        act = expert.sampler(args.seed) if args.policy == "sample" else expert.act
        print(describe(record_expert(expert, args.video, act=act, epsilon=epsilon, sticky=args.sticky,
                                     seed=args.seed, max_frames=args.video_max_frames, fps=args.video_fps,
                                     gif=args.gif)))


def _score(args: argparse.Namespace, expert, epsilon: float) -> None:
    from amn.evaluation import HUMAN_RANDOM, human_normalized, play_games, summarize
    from experts import registry
    from experts.atari import life_loss_presses_fire

    act = expert.sampler(args.seed) if args.policy == "sample" else expert.act
    returns = play_games(act, expert.game, args.episodes, epsilon=epsilon, sticky=args.sticky,
                         seed=args.seed, num_envs=args.num_envs, max_frames=args.max_frames,
                         fire_after_life_loss=life_loss_presses_fire(expert.observation_pipeline))
    result = summarize(returns)
    result.update(expert=expert.name, game=expert.game, algo=expert.algo, policy=args.policy, epsilon=epsilon,
                  sticky=args.sticky, seed=args.seed, max_frames=args.max_frames, command=_command_line())
    if expert.game in HUMAN_RANDOM:
        result["normalized_mean"] = human_normalized(result["mean"], expert.game)
    print(f"{expert.name} ({expert.game}, {expert.algo}): {result['mean']:.1f} ± {result['std']:.1f} "
          f"over {result['episodes']} games ({args.policy} policy, epsilon {epsilon}, "
          f"{'sticky' if args.sticky else 'no sticky'} actions)")
    print("games: " + ", ".join(f"{r:g}" for r in returns))
    entries = registry.load_registry()
    key = str(args.expert).lower()
    if key in entries and not Path(args.expert).exists():  # remember the measured score for `amn experts list`
        score = {k: result[k] for k in ("mean", "std", "episodes", "returns")}
        score["protocol"] = _protocol(epsilon, args.sticky, args.seed, args.max_frames, args.policy)
        registry.register(key, dict(entries[key], score=score))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


def _list(args: argparse.Namespace) -> None:
    from experts import registry, shipped

    rows = []
    for name in shipped.shipped_names():
        try:
            meta = shipped.read_metadata(shipped.SHIPPED_DIR / f"{name}.json")
        except (ValueError, FileNotFoundError) as err:
            rows.append((name, "shipped", "?", "?", "?", f"broken: {err}"))
            continue
        score = meta.get("score") or {}
        measured = f"{score['mean']:.1f} ± {score['std']:.1f} ({score['episodes']} games)" if "mean" in score else "-"
        rows.append((name, "shipped", meta["game"], meta["algo"], meta.get("training_steps"), measured))
    for name, entry in sorted(registry.load_registry().items()):
        score = entry.get("score") or {}
        measured = f"{score['mean']:.1f} ± {score['std']:.1f} ({score['episodes']} games)" if "mean" in score else "-"
        rows.append((name, "registered", entry.get("game"), entry.get("algo"), entry.get("training_steps"), measured))
    if not rows:
        print(f"no experts: none shipped, none in {registry.registry_path()}; "
              f"`amn experts import PATH --name NAME` adds one")
        return
    header = ("name", "where", "game", "algo", "steps", "score")
    table = [header] + [tuple("-" if c is None else (f"{c:,}" if isinstance(c, int) else str(c)) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _import(args: argparse.Namespace) -> None:
    from experts import load_expert, registry

    src = Path(args.path).resolve()
    expert = load_expert(src, game=args.game)  # validates before anything is copied
    name = (args.name or f"{expert.game.lower()}_{expert.algo}").lower()
    dest_dir = registry.experts_home() / "imported"
    dest_dir.mkdir(parents=True, exist_ok=True)
    if src.suffix.lower() == ".zip":
        dest = dest_dir / f"{name}.zip"
        if src != dest:
            shutil.copyfile(src, dest)
    else:  # own format: copy both halves under the registry name (the sha256 is of the content)
        dest = dest_dir / f"{name}.json"
        meta = json.loads(src.with_suffix(".json").read_text())
        weights = src.with_suffix(".json").parent / meta["weights"]
        if weights.resolve() != (dest_dir / f"{name}.pt").resolve():
            shutil.copyfile(weights, dest_dir / f"{name}.pt")
        dest.write_text(json.dumps(dict(meta, weights=f"{name}.pt"), indent=2) + "\n")
    entry = dict(path=str(dest), game=expert.game, algo=expert.algo, source=str(src),
                 training_steps=expert.meta.get("training_steps"), score=expert.meta.get("score"))
    path = registry.register(name, entry)
    print(f"registered {name!r}: {expert.game}, {expert.algo}, {expert.num_actions} actions -> {dest} (registry {path})")


def _export(args: argparse.Namespace) -> None:
    import torch

    from amn.evaluation import play_games, summarize
    from experts import export_expert, load_expert
    from experts.atari import life_loss_presses_fire
    from experts.export import record_score

    torch.set_num_threads(args.threads)
    path = export_expert(load_expert(args.model, game=args.game), args.name, out_dir=args.out_dir,
                         command=_command_line())
    print(f"wrote {path} and {path.with_suffix('.pt')}")
    if args.episodes > 0:
        # Measure what ships: float16 rounding can flip a near-tied greedy action of the source.
        shipped = load_expert(path)
        returns = play_games(shipped.act, shipped.game, args.episodes, epsilon=args.epsilon, seed=args.seed,
                             fire_after_life_loss=life_loss_presses_fire(shipped.observation_pipeline))
        score = dict(summarize(returns), protocol=_protocol(args.epsilon, False, args.seed))
        record_score(path, score)
        print(f"measured the exported weights: {score['mean']:.1f} ± {score['std']:.1f} over {score['episodes']} games")


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _fetch(args: argparse.Namespace) -> None:
    from experts.atari import canonical_game
    from experts.registry import experts_home

    game = canonical_game(args.game)
    env_id = f"{game}NoFrameskip-v4"
    repo, filename = f"sb3/{args.algo}-{env_id}", f"{args.algo}-{env_id}.zip"
    by_hand = (f"download {filename} from the Hugging Face repo {repo} on a machine with internet, "
               f"copy it here and run `amn experts import {filename}`")
    try:
        from huggingface_sb3 import load_from_hub
    except ImportError:
        raise ValueError(f"huggingface_sb3 is not installed (pip install 'actor-mimic[zoo]'); or {by_hand}") from None
    if not _hub_reachable():
        raise ValueError(f"cannot reach {HUB_HOST[0]} (offline?): {by_hand}")
    downloaded = Path(load_from_hub(repo_id=repo, filename=filename))
    dest = experts_home() / "downloads" / filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(downloaded, dest)
    print(f"downloaded {dest}")
    _import(argparse.Namespace(path=dest, name=args.name, game=game))


def add_parsers(sub) -> None:
    experts = sub.add_parser("experts", help="train, evaluate, list and import experts")
    esub = experts.add_subparsers(dest="experts_command", required=True)

    train = esub.add_parser("train", help="train an expert with SB3 (rl-zoo Atari hyperparameters)")
    train.add_argument("game")
    train.add_argument("--algo", default="ppo", choices=["ppo", "dqn"])
    train.add_argument("--steps", type=int, default=None, help="agent steps (default: the zoo's 10M)")
    train.add_argument("--out", type=Path, default=None, help="run directory (default: ~/.cache/amn/experts/...)")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-minutes", type=float, default=5.0)
    train.set_defaults(func=_train)

    evaluate = esub.add_parser("evaluate", help="play full games with an expert and report the raw score")
    evaluate.add_argument("expert", help="shipped or registered name, or a path (.zip, .pt, .json)")
    evaluate.add_argument("--episodes", type=int, default=10,
                          help="full games to play (default 10; 0 with --video: the video only)")
    evaluate.add_argument("--policy", choices=("greedy", "sample"), default="greedy",
                          help="greedy (argmax, the shipped scores' protocol) or sample from softmax(logits) "
                               "as the rl-zoo plays Atari (PPO/A2C only)")
    evaluate.add_argument("--epsilon", type=float, default=None,
                          help="chance of a uniform random action (default 0.01 greedy, 0 sampled)")
    evaluate.add_argument("--sticky", action="store_true", help="sticky actions (ALE v5 protocol)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--num-envs", type=int, default=None, help="games in parallel (default min(episodes, 8))")
    evaluate.add_argument("--max-frames", type=int, default=108_000, help="per-game frame cap (default 108,000)")
    evaluate.add_argument("--game", default=None, help="game, if the file does not say")
    evaluate.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    evaluate.add_argument("--json", type=Path, default=None, help="write the result here")
    from amn.video import add_video_arguments

    add_video_arguments(evaluate, "DIR/<name>.mp4, one game of the expert (seed --seed)", "<name>")
    evaluate.set_defaults(func=_evaluate)

    lst = esub.add_parser("list", help="shipped and registered experts")
    lst.set_defaults(func=_list)

    imp = esub.add_parser("import", help="validate an SB3 zip (or own-format expert) and register it")
    imp.add_argument("path", type=Path)
    imp.add_argument("--name", default=None, help="registry name (default <game>_<algo>)")
    imp.add_argument("--game", default=None, help="game, if the file does not say")
    imp.set_defaults(func=_import)

    export = esub.add_parser("export", help="write experts/shipped/<name>.pt/.json and measure the exported weights")
    export.add_argument("model", help="SB3 model zip (or any expert name/path)")
    export.add_argument("--name", required=True, help="e.g. pong, space_invaders")
    export.add_argument("--episodes", type=int, default=10, help="games for the measured score (0: none)")
    export.add_argument("--epsilon", type=float, default=0.01)
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--game", default=None)
    export.add_argument("--out-dir", type=Path, default=None, help="default experts/shipped/")
    export.add_argument("--threads", type=int, default=1)
    export.set_defaults(func=_export)

    fetch = esub.add_parser("fetch", help="download an RL-zoo expert (sb3/<algo>-<Game>NoFrameskip-v4) and import it")
    fetch.add_argument("game")
    fetch.add_argument("--algo", default="ppo", choices=["ppo", "a2c", "dqn", "qrdqn"])
    fetch.add_argument("--name", default=None)
    fetch.set_defaults(func=_fetch)
