"""Videos of agents playing: ``amn evaluate RUN --video DIR`` and ``amn experts evaluate NAME --video DIR``.

What is recorded. ``ale_py``'s ``AtariVectorEnv`` (the project's one pipeline, see
``experts.atari``) has no RGB frames, so each agent here plays through :class:`RGBAtariEnv`:
one ``gymnasium`` ALE env (``ALE/<Game>-v5``, ``frameskip=1``, no sticky actions unless asked,
minimal action set, ``render_mode="rgb_array"``) driven frame by frame the way
``AtariVectorEnv``'s C++ ``PreprocessedEnv`` drives its ALE: the ALE seeded with the seed,
FIRE on reset (games that have it), the same ``std::mt19937`` no-op draw, frameskip 4 with a
max over the last two grayscale frames, ``cv2.INTER_AREA`` 84x84 resize, a zero-padded stack
of 4. Its observations equal ``make_atari_vec``'s for the same seed and actions
(``tests/test_video.py`` checks it), so an agent sees what it was trained on, and a recorded
game is the game ``amn.evaluation.play_games(act, game, 1, seed=seed, num_envs=1,
max_frames=max_frames)`` plays, with the same score. The video shows ``env.render()``: the
ALE's full 210x160 RGB screen, not the 84x84 view.

Side by side. The student (left) and its expert (right) each have their own env, the same
seed (so the same no-op start) and their own ε-greedy generator ``default_rng(seed)`` drawn
exactly as ``play_games`` draws it, so both play the same game start under the same ε stream,
as ``play_games_side_by_side`` does. A strip above each screen shows its name and running
score (updated every emulator frame); when a game ends, its last screen stays, marked
``game over`` or ``capped``, while the other plays on.

Format (defaults). Each screen is scaled 2x (nearest neighbour, 320x420). MP4, H.264 (libx264,
yuv420p), 30 fps: each video frame is the pixelwise max of two consecutive emulator frames
(the ALE runs at 60 Hz), so it plays in real time and objects the game draws on alternate
frames do not vanish; ``fps=60`` writes every emulator frame instead. The game is capped at
``VIDEO_MAX_FRAMES`` = 18,000 emulator frames (5 minutes of play) unless asked otherwise; a
capped game counts with its score so far, as in evaluation. ``gif=True`` also writes the first
``GIF_SECONDS`` (10 s) at 15 fps, at half the MP4's size (the native 160x210 per screen), for
documentation. A whole Pong game (student 10 vs expert 3, 6,655 frames, 3.7 minutes): a 650 KB
MP4 and a 160 KB GIF. Files: ``DIR/<Game>.mp4`` per game of a run, ``DIR/<expert name>.mp4``
for an expert, with the ``.gif`` and a ``.json`` of the scores beside it, each written to a
temporary file in ``DIR`` then ``os.replace``-d into place. ``DIR`` must exist.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from amn.errors import UsageError
from amn.video_env import SCREEN_SHAPE, RGBAtariEnv

#: Default per-game cap of a recorded game, in emulator frames: 5 minutes at 60 Hz.
VIDEO_MAX_FRAMES = 18_000
#: Default MP4 frame rate: 30 (max of frame pairs, real time) or 60 (every emulator frame).
VIDEO_FPS = 30
VIDEO_FPS_CHOICES = (30, 60)
#: Nearest-neighbour upscaling of the 210x160 screen in the MP4.
SCALE = 2
#: The GIF: its first seconds, its frame rate, its downscaling of the MP4's frames.
GIF_SECONDS = 10.0
GIF_FPS = 15
GIF_SHRINK = 2
#: Height of the name/score strip above a screen, at ``SCALE``; the gap between two screens.
STRIP = 28
GAP = 16
ALE_FPS = 60

Actor = Callable[[np.ndarray], np.ndarray]


@dataclass
class Player:
    """An agent to record: its strip's ``name``, its greedy ``act`` (``uint8 [N, 4, 84, 84] ->
    int [N]`` minimal-action indices, ε applied here) and whether FIRE is pressed for it after
    a life loss (``amn.evaluation.play_games``'s ``fire_after_life_loss``)."""

    name: str
    act: Actor
    fire_after_life_loss: bool = False


@dataclass
class _Playing:
    player: Player
    env: RGBAtariEnv
    rng: np.random.Generator
    fire: object  # experts.atari.LifeLossFire | None
    obs: np.ndarray
    lives: np.ndarray
    score: float = 0.0
    steps: int = 0
    end: str = ""  # "", "game over" or "capped"
    screen: np.ndarray = field(default=None)  # the last screen, shown once the game ends


def check_video_dir(path: str | Path, flag: str = "--video") -> Path:
    """``path`` as a writable directory, or a one-line :class:`UsageError` (it is not created)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such directory (create it first)")
    if not path.is_dir():
        raise UsageError(f"{flag} {path}: not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: directory is not writable")
    return path


def add_video_arguments(parser: argparse.ArgumentParser, what: str, stem: str) -> None:
    """``--video DIR``, ``--video-max-frames``, ``--video-fps``, ``--gif`` (``amn.video``)."""
    parser.add_argument("--video", type=Path, default=None, metavar="DIR",
                        help=f"also write {what}: ALE's full RGB screens, running scores above; "
                             f"DIR must exist. --episodes 0: the video only")
    parser.add_argument("--video-max-frames", type=int, default=VIDEO_MAX_FRAMES, metavar="N",
                        help=f"emulator-frame cap of a recorded game (default {VIDEO_MAX_FRAMES:,}: "
                             f"{VIDEO_MAX_FRAMES // 3600} minutes at 60 Hz)")
    parser.add_argument("--video-fps", type=int, default=VIDEO_FPS, choices=VIDEO_FPS_CHOICES,
                        help="30 (default): real time, each frame the max of two emulator frames; "
                             "60: every emulator frame")
    parser.add_argument("--gif", action="store_true",
                        help=f"with --video: also DIR/{stem}.gif, the first {GIF_SECONDS:g} s at half size")


def check_video_args(args: argparse.Namespace) -> None:
    """The CLI's ``--video`` flags, checked before any game is played; one-line :class:`UsageError`."""
    if args.video is None:
        if args.gif:
            raise UsageError("--gif needs --video DIR")
        if args.episodes == 0:
            raise UsageError("--episodes 0 needs --video DIR (a video, no scores)")
        return
    check_video_dir(args.video)
    if args.video_max_frames < 1:
        raise UsageError(f"--video-max-frames must be >= 1, got {args.video_max_frames}")
    _imageio()


def _imageio():
    try:
        import imageio
        import imageio_ffmpeg  # noqa: F401  (its wheel carries the ffmpeg binary)
    except ImportError:
        raise UsageError("videos need imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg") from None
    return imageio


def _label(score: float) -> str:
    return f"{score:.0f}" if float(score).is_integer() else f"{score:.1f}"


def draw_strip(width: int, name: str, score: float, end: str = "", *, height: int = STRIP) -> np.ndarray:
    """The strip above a screen, ``uint8 [height, width, 3]``: ``name`` (and ``end``) left, the score right."""
    import cv2

    strip = np.full((height, width, 3), 24, np.uint8)
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.55 * height / STRIP
    thick = 1
    text = _label(score)
    (tw, th), _ = cv2.getTextSize(text, font, size, thick)
    base = (height + th) // 2
    cv2.putText(strip, text, (width - tw - 6, base), font, size, (255, 255, 255), thick, cv2.LINE_AA)
    left = name if not end else f"{name} - {end}"
    while left and cv2.getTextSize(left, font, size, thick)[0][0] > width - tw - 18:
        left = left[:-1]
    colour = (255, 220, 90) if end else (200, 200, 200)
    cv2.putText(strip, left, (6, base), font, size, colour, thick, cv2.LINE_AA)
    return strip


def compose(screens: Sequence[np.ndarray], names: Sequence[str], scores: Sequence[float],
            ends: Sequence[str], *, scale: int = SCALE) -> np.ndarray:
    """One video frame: the screens ``uint8 [210, 160, 3]`` side by side, scaled, each under its strip.

    Size ``(STRIP + 210 * scale, k * 160 * scale + (k - 1) * GAP)`` for ``k`` screens; at the
    default scale both are multiples of 16 (H.264 macro blocks).
    """
    h, w = SCREEN_SHAPE[0] * scale, SCREEN_SHAPE[1] * scale
    k = len(screens)
    frame = np.zeros((STRIP + h, k * w + (k - 1) * GAP, 3), np.uint8)
    for i, (screen, name, score, end) in enumerate(zip(screens, names, scores, ends)):
        x = i * (w + GAP)
        frame[:STRIP, x:x + w] = draw_strip(w, name, score, end)
        frame[STRIP:, x:x + w] = np.repeat(np.repeat(screen, scale, axis=0), scale, axis=1)
    return frame


def _atomic_target(path: Path) -> Path:
    """A new empty file beside ``path`` (same suffix, for the encoder) to ``os.replace`` onto it;
    created like any file (umask), not ``mkstemp``'s owner-only mode."""
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            with open(tmp, "x"):
                return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def record_game(players: Sequence[Player], game: str, path: str | Path, *, epsilon: float = 0.01,
                sticky: bool = False, seed: int = 0, max_frames: int = VIDEO_MAX_FRAMES, fps: int = VIDEO_FPS,
                gif: bool = False, gif_seconds: float = GIF_SECONDS, progress: bool = False,
                on_frame: Callable[[int, np.ndarray], None] | None = None) -> dict:
    """Play one game per player, side by side in one MP4 at ``path``; return what was recorded.

    Each player plays ``game`` as ``amn.evaluation.play_games(act, game, 1, epsilon=epsilon,
    sticky=sticky, seed=seed, num_envs=1, max_frames=max_frames, fire_after_life_loss=...)``
    does (same observations, ε draws and score). The players step in lockstep, 4 emulator
    frames per agent step. ``fps`` 30: a video frame is the pixelwise max of two consecutive
    emulator frames; 60: every emulator frame. ``gif``: also ``path`` with ``.gif``, the first
    ``gif_seconds`` at ``GIF_FPS``, half size. ``on_frame(i, frame)`` sees each MP4 frame.
    A JSON with the result goes beside the MP4 (``.json``).

    Returns ``{"game", "video", "gif", "json", "video_frames", "fps", "size": [width, height],
    "seed", "epsilon", "sticky", "max_frames", "players": [{"name", "score", "frames", "steps",
    "end"}]}``: ``score`` is the raw return, ``frames``/``steps`` the emulator frames/agent steps
    it played, ``end`` ``"game over"`` or ``"capped"``.
    """
    from tqdm import tqdm

    from experts.atari import LifeLossFire, canonical_game, life_losses

    game = canonical_game(game)
    path = Path(path)
    if fps not in VIDEO_FPS_CHOICES:
        raise UsageError(f"video fps must be one of {', '.join(map(str, VIDEO_FPS_CHOICES))}, got {fps}")
    if max_frames < 1:
        raise UsageError(f"video frame cap must be >= 1, got {max_frames}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if not players:
        raise ValueError("record_game needs at least one player")
    check_video_dir(path.parent)
    imageio = _imageio()
    pool = ALE_FPS // fps  # emulator frames per video frame
    gif_every = max(1, fps // GIF_FPS)
    gif_count = int(round(gif_seconds * fps)) if gif else 0
    names = [p.name for p in players]

    tmp_mp4 = _atomic_target(path)
    gif_path, tmp_gif = (path.with_suffix(".gif"), None)
    gif_frames: list[np.ndarray] = []
    playing: list[_Playing] = []
    written = 0
    writer = None
    try:
        for p in players:
            env = RGBAtariEnv(game, sticky=sticky, max_frames=max_frames)
            obs, info = env.reset(seed)
            fire = LifeLossFire.for_game(game, 1, full_actions=False) if p.fire_after_life_loss else None
            playing.append(_Playing(p, env, np.random.default_rng(seed), fire, obs[None], np.array([info["lives"]]),
                                    screen=env.render()))
        num_actions = len(playing[0].env.action_set)
        writer = imageio.get_writer(tmp_mp4, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", quality=6, macro_block_size=16,
                                    ffmpeg_log_level="error")
        pending: list[tuple[list[np.ndarray], list[float], list[str]]] = []  # emulator frames not yet written

        def emit(group) -> None:
            nonlocal written
            screens = [np.maximum.reduce([g[0][i] for g in group]) for i in range(len(players))]
            _, scores, ends = group[-1]
            frame = compose(screens, names, scores, ends)
            writer.append_data(frame)
            if on_frame is not None:
                on_frame(written, frame)
            if written < gif_count and written % gif_every == 0:
                import cv2

                gif_frames.append(cv2.resize(frame, (frame.shape[1] // GIF_SHRINK, frame.shape[0] // GIF_SHRINK),
                                             interpolation=cv2.INTER_AREA))
            written += 1

        with tqdm(total=max_frames, unit="frame", disable=not progress, dynamic_ncols=True,
                  desc=f"{game} video", mininterval=2.0) as bar:
            while any(not s.end for s in playing):
                per_player = []  # (screens [k], running scores [k]) of this step, per player
                for s in playing:
                    if s.end:
                        per_player.append(None)
                        continue
                    actions = np.asarray(s.player.act(s.obs)).astype(np.int64).reshape(-1)
                    if actions.shape != (1,) or not 0 <= actions[0] < num_actions:
                        raise ValueError(f"{s.player.name}: act must return 1 action in [0, {num_actions}) "
                                         f"for {game}, got {actions!r}")
                    if epsilon > 0:  # as play_games draws it, for one env
                        explore = s.rng.random(1) < epsilon
                        actions[explore] = s.rng.integers(0, num_actions, int(explore.sum()))
                    if s.fire is not None:
                        actions = s.fire.override(actions)
                    obs, reward, terminated, truncated, info, screens, rewards = s.env.step(int(actions[0]))
                    lives = np.array([info["lives"]])
                    done = np.array([terminated or truncated])
                    if s.fire is not None:
                        s.fire.observe(life_losses(s.lives, lives, done))
                    s.obs, s.lives = obs[None], lives
                    running = s.score + np.cumsum(rewards)
                    s.score += reward
                    s.steps += 1
                    s.screen = screens[-1]
                    if done[0]:
                        s.end = "game over" if terminated else "capped"
                    per_player.append((screens, running))
                k = max(len(pp[0]) for pp in per_player if pp is not None)
                for j in range(k):
                    frame_screens, frame_scores, frame_ends = [], [], []
                    for s, pp in zip(playing, per_player):
                        if pp is not None and j < len(pp[0]):
                            frame_screens.append(pp[0][j])
                            frame_scores.append(float(pp[1][j]))
                            last = j == len(pp[0]) - 1
                            frame_ends.append(s.end if last else "")
                        else:  # its game is over: its last screen stays
                            frame_screens.append(s.screen)
                            frame_scores.append(s.score)
                            frame_ends.append(s.end)
                    pending.append((frame_screens, frame_scores, frame_ends))
                    if len(pending) == pool:
                        emit(pending)
                        pending = []
                bar.update(k)
            if pending:
                emit(pending)
        writer.close()
        writer = None
        os.replace(tmp_mp4, path)
        if gif:
            tmp_gif = _atomic_target(gif_path)
            imageio.v3.imwrite(tmp_gif, np.stack(gif_frames), extension=".gif", duration=1000 / GIF_FPS, loop=0)
            os.replace(tmp_gif, gif_path)
    finally:
        if writer is not None:
            writer.close()
        for s in playing:
            s.env.close()
        for tmp in (tmp_mp4, tmp_gif):
            if tmp is not None and tmp.exists():
                tmp.unlink()
    height, width = STRIP + SCREEN_SHAPE[0] * SCALE, len(players) * SCREEN_SHAPE[1] * SCALE + (len(players) - 1) * GAP
    result = {
        "game": game, "video": str(path), "gif": str(gif_path) if gif else None,
        "json": str(path.with_suffix(".json")), "video_frames": written, "fps": fps, "size": [width, height],
        "seed": seed, "epsilon": epsilon, "sticky": sticky, "max_frames": max_frames,
        "players": [{"name": s.player.name, "score": s.score, "frames": s.env.elapsed, "steps": s.steps,
                     "end": s.end} for s in playing],
    }
    tmp_json = _atomic_target(path.with_suffix(".json"))
    try:
        tmp_json.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp_json, path.with_suffix(".json"))
    finally:
        if tmp_json.exists():
            tmp_json.unlink()
    return result


def describe(result: dict) -> str:
    """One line per recorded game, for the CLIs."""
    who = " vs ".join(f"{p['name']} {_label(p['score'])} ({p['frames']:,} frames, {p['end']})"
                      for p in result["players"])
    extra = f" and {result['gif']}" if result["gif"] else ""
    return (f"video {result['video']}{extra}: {result['game']}, {who}; "
            f"{result['video_frames']:,} frames at {result['fps']} fps, seed {result['seed']}")


def record_expert(expert, video_dir: str | Path, *, act: Actor | None = None, epsilon: float = 0.01,
                  sticky: bool = False, seed: int = 0, max_frames: int = VIDEO_MAX_FRAMES, fps: int = VIDEO_FPS,
                  gif: bool = False, progress: bool = True) -> dict:
    """``DIR/<expert name>.mp4``: one game of an ``experts.Expert`` (``act``: default its greedy policy)."""
    from experts.atari import life_loss_presses_fire

    video_dir = check_video_dir(video_dir)
    player = Player(f"expert {expert.name}", act or expert.act, life_loss_presses_fire(expert.observation_pipeline))
    return record_game([player], expert.game, video_dir / f"{_file_stem(expert.name)}.mp4", epsilon=epsilon,
                       sticky=sticky, seed=seed, max_frames=max_frames, fps=fps, gif=gif, progress=progress)


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "video"


def record_run(path: str | Path, video_dir: str | Path, *, games: list[str] | None = None, epsilon: float = 0.05,
               sticky: bool = False, seed: int = 0, max_frames: int = VIDEO_MAX_FRAMES, fps: int = VIDEO_FPS,
               gif: bool = False, progress: bool = True) -> list[dict]:
    """``DIR/<Game>.mp4`` per game of a run directory/checkpoint: its student (left) beside its expert (right)."""
    from amn.collect import load_experts
    from amn.report import load_run_student, student_actor
    from experts.atari import life_loss_presses_fire

    video_dir = check_video_dir(video_dir)
    _, _, cfg, student, trained, wanted = load_run_student(path, games)
    experts = load_experts(cfg, [trained.index(g) for g in wanted])
    results = []
    for game, expert in zip(wanted, experts):
        fire = life_loss_presses_fire(expert.observation_pipeline)
        players = [Player("student", student_actor(student, trained.index(game), expert.action_set), fire),
                   Player(f"expert {expert.name}", expert.act, fire)]
        results.append(record_game(players, game, video_dir / f"{game}.mp4", epsilon=epsilon, sticky=sticky,
                                   seed=seed, max_frames=max_frames, fps=fps, gif=gif, progress=progress))
    return results
