"""amn/video.py: the RGB env reproduces AtariVectorEnv, and the videos are what was played."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amn.video import GAP, GIF_FPS, GIF_SECONDS, SCALE, STRIP, Player, compose, draw_strip, record_game
from amn.video_env import RGBAtariEnv

pytestmark = pytest.mark.slow

imageio = pytest.importorskip("imageio")
pytest.importorskip("imageio_ffmpeg")

W, H = 160 * SCALE, 210 * SCALE  # one screen in the MP4


@pytest.fixture
def one_thread():
    """Batch-1 convolutions are fastest on one thread (and the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def decode(path, keep):
    """The MP4's frame count, frame shape and the frames ``keep(i)`` asks for, ``{i: frame}``
    (streamed: a whole side-by-side video would be ~1 MB a frame)."""
    kept, shape, count = {}, None, 0
    with imageio.get_reader(path, format="FFMPEG") as reader:
        for i, frame in enumerate(reader):
            shape, count = frame.shape, i + 1
            if keep(i):
                kept[i] = frame
    return count, shape, kept


@pytest.mark.parametrize("game, seed, sticky, cap", [
    ("Pong", 0, False, 600),  # 16 no-ops; the cap truncates the game
    ("Pong", 9, False, 600),  # no no-op
    ("Breakout", 9, False, 4_000),  # FIRE on reset, lives lost, then game over (262 steps)
    ("Breakout", 2, True, 600),  # sticky actions: the ALE's own generator, seeded alike
])
def test_observations_equal_atari_vector_env(game, seed, sticky, cap):
    from experts.atari import EnvSettings, make_atari_vec

    vec = make_atari_vec(game, 1, settings=EnvSettings(sticky=sticky, max_frames=cap))
    env = RGBAtariEnv(game, sticky=sticky, max_frames=cap)
    try:
        want, info = vec.reset(seed=seed)
        got, got_info = env.reset(seed)
        assert got.shape == (4, 84, 84) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want[0])
        assert got_info["lives"] == info["lives"][0]
        rng = np.random.default_rng(seed)
        for step in range(10_000):
            a = int(rng.integers(0, len(env.action_set)))
            want, reward, terminated, truncated, info = vec.step(np.array([a]))
            got, got_reward, got_term, got_trunc, got_info, screens, rewards = env.step(a)
            done = terminated[0] or truncated[0]
            np.testing.assert_array_equal(got, info["final_obs"][0] if done else want[0], err_msg=f"step {step}")
            assert (got_reward, got_term, got_trunc) == (reward[0], terminated[0], truncated[0]), step
            assert screens.shape[1:] == (210, 160, 3) and len(screens) == len(rewards) <= 4
            assert rewards.sum() == got_reward
            if done:
                break
            assert got_info["lives"] == info["lives"][0], step  # at a game's end: the next game's lives
        assert done
        if truncated[0]:
            assert env.elapsed == cap
        if game == "Breakout" and not sticky:
            assert terminated[0] and step > 100  # a full game over, not the cap
    finally:
        vec.close()
        env.close()


def strip_error(frame: np.ndarray, panel: int, name: str, score: float, end: str, part: slice) -> float:
    """Mean absolute difference of ``part`` (columns) of ``panel``'s decoded strip from the strip
    drawn with ``name``, ``score`` and ``end``: a template match of what the strip shows."""
    x = panel * (W + GAP)
    decoded = frame[:STRIP, x:x + W][:, part].astype(np.float64)
    return float(np.abs(decoded - draw_strip(W, name, score, end)[:, part]).mean())


SCORE, LABEL = slice(W - 64, W), slice(0, W - 64)  # the strip's right end shows the score


def test_side_by_side_video_follows_the_game(tmp_path, one_thread):
    from amn.evaluation import play_games_side_by_side
    from amn.report import student_actor
    from amn.student import Student
    from experts import load_expert

    torch.manual_seed(0)
    student = Student(1).eval()  # untrained: plays badly but deterministically
    expert = load_expert("pong")
    act = student_actor(student, 0, expert.action_set)
    players = [Player("student", act), Player("expert pong", expert.act)]
    cap, seed, epsilon = 800, 3, 0.05
    kept: dict[int, np.ndarray] = {}

    def on_frame(i: int, frame: np.ndarray) -> None:
        if i % 25 == 0 or i >= cap // 2 - 5:
            kept[i] = frame.copy()

    out = tmp_path / "Pong.mp4"
    result = record_game(players, "Pong", out, epsilon=epsilon, seed=seed, max_frames=cap, gif=True,
                         on_frame=on_frame)

    # The same games, ε draws and scores as the evaluation's side-by-side play, one env each.
    returns = play_games_side_by_side([act, expert.act], "Pong", 1, epsilon=epsilon, seed=seed, num_envs=1,
                                      max_frames=cap, progress=False)
    scores = [p["score"] for p in result["players"]]
    assert scores == [r[0] for r in returns]
    assert [(p["frames"], p["end"]) for p in result["players"]] == [(cap, "capped")] * 2

    # Both games move: the playfields (between Pong's walls) change from frame to frame.
    moved, previous = np.zeros((2, cap // 2), bool), None

    count, shape = 0, None
    with imageio.get_reader(out, format="FFMPEG") as reader:
        decoded = {}
        for i, frame in enumerate(reader):
            count, shape = i + 1, frame.shape
            field = frame[STRIP + 2 * 34:STRIP + 2 * 194].astype(np.int16)
            if previous is not None:
                for panel in range(2):
                    x = panel * (W + GAP)
                    moved[panel, i] = np.abs(field[:, x:x + W] - previous[:, x:x + W]).max() > 40
            previous = field
            if i in kept or i == 0:
                decoded[i] = frame
    assert count == result["video_frames"] == cap // 2  # 30 fps: one frame per two emulator frames
    assert shape == (STRIP + H, 2 * W + GAP, 3) and result["size"] == [2 * W + GAP, STRIP + H]
    assert moved[:, 1:].mean(axis=1).min() > 0.8, moved[:, 1:].mean(axis=1)
    # The decoded frames are the ones composed (H.264 is lossy), and in order.
    for i, frame in kept.items():
        err = np.abs(decoded[i].astype(np.int16) - frame).mean()
        assert err < 2.0, (i, err)
        if i + 25 in kept:
            assert np.abs(decoded[i].astype(np.int16) - kept[i + 25]).mean() > err, i
    last = decoded[count - 1]
    # The two screens differ: the student and the expert play differently.
    assert (np.abs(last[STRIP:, :W].astype(np.int16) - last[STRIP:, W + GAP:]).max(axis=2) > 40).sum() > 100
    # The strips show the returns reported: each read back by template, against its neighbours.
    for panel, (name, score) in enumerate(zip(["student", "expert pong"], scores)):
        errors = {s: strip_error(last, panel, name, s, "capped", SCORE) for s in range(int(score) - 3, int(score) + 4)}
        assert errors[score] < 1.0 and all(e > errors[score] + 0.5 for s, e in errors.items() if s != score), errors
        assert strip_error(last, panel, name, score, "capped", LABEL) < strip_error(last, panel, name, score, "",
                                                                                    LABEL)
    first = decoded[0]
    assert all(strip_error(first, p, n, 0, "", SCORE) < 1.0 for p, n in enumerate(["student", "expert pong"]))

    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta == json.loads(json.dumps(result))
    gif = imageio.v3.imread(out.with_suffix(".gif"), index=None)
    # First 10 s at 15 fps, half size (Pillow merges identical consecutive frames).
    assert 0.8 * GIF_SECONDS * GIF_FPS <= len(gif) <= GIF_SECONDS * GIF_FPS
    assert gif.shape[1:3] == ((STRIP + H) // 2, (2 * W + GAP) // 2)
    assert out.with_suffix(".gif").stat().st_size < 3_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Pong.gif", "Pong.json", "Pong.mp4"]  # no temp files


def test_compose_layout():
    screens = [np.full((210, 160, 3), v, np.uint8) for v in (10, 200)]
    frame = compose(screens, ["a", "b"], [0, 12.5], ["", "game over"])
    assert frame.shape == (STRIP + H, 2 * W + GAP, 3) and frame.shape[0] % 16 == 0 == frame.shape[1] % 16
    assert (frame[STRIP:, :W] == 10).all() and (frame[STRIP:, W + GAP:] == 200).all()
    assert (frame[:, W:W + GAP] == 0).all()
    assert not np.array_equal(draw_strip(W, "a", 12, ""), draw_strip(W, "a", 13, ""))


def test_experts_evaluate_video_cli(tmp_path, monkeypatch, capsys):
    from amn.cli import main

    monkeypatch.setenv("AMN_HOME", str(tmp_path / "home"))  # nothing written to the user's registry
    out = tmp_path / "videos"
    out.mkdir()
    rc = main(["experts", "evaluate", "pong", "--episodes", "1", "--max-frames", "400", "--video", str(out),
               "--video-max-frames", "400", "--video-fps", "60"])
    assert rc == 0
    printed = capsys.readouterr().out
    (games_line,) = [line for line in printed.splitlines() if line.startswith("games: ")]
    meta = json.loads((out / "pong.json").read_text())
    # The video's game is the evaluation's (one game, one env, seed 0): the same score.
    assert float(games_line.removeprefix("games: ")) == meta["players"][0]["score"]
    assert "video " in printed and meta["fps"] == 60
    count, shape, _ = decode(out / "pong.mp4", keep=lambda i: False)
    assert (count, shape) == (400, (STRIP + H, W, 3))  # 60 fps: every emulator frame
    assert sorted(p.name for p in out.iterdir()) == ["pong.json", "pong.mp4"]


def test_student_evaluate_video_cli(tmp_path, capsys):
    from amn.checkpoint import save_checkpoint
    from amn.cli import main
    from amn.config import TrainConfig
    from amn.student import Student

    cfg = TrainConfig()  # Pong, with the shipped pong expert
    torch.manual_seed(1)
    student = Student(cfg.num_games).state_dict()
    save_checkpoint(tmp_path / "checkpoint.pt", {"config": cfg.to_dict(), "student": student,
                                                  "counters": {"agent_steps": 0}})
    out = tmp_path / "videos"
    out.mkdir()
    rc = main(["evaluate", str(tmp_path), "--episodes", "0", "--video", str(out), "--video-max-frames", "200",
               "--no-progress"])
    assert rc == 0
    assert "video " in capsys.readouterr().out
    count, shape, _ = decode(out / "Pong.mp4", keep=lambda i: False)
    assert (count, shape) == (100, (STRIP + H, 2 * W + GAP, 3))
    names = [p["name"] for p in json.loads((out / "Pong.json").read_text())["players"]]
    assert names == ["student", "expert pong"]


@pytest.mark.parametrize("command", [["experts", "evaluate", "pong"], ["evaluate", "no-such-run"]])
def test_bad_video_dir_is_one_line(tmp_path, capsys, command):
    from amn.cli import main

    a_file = tmp_path / "file"
    a_file.write_text("")
    for bad, why in ((tmp_path / "missing", "no such directory"), (a_file, "not a directory")):
        assert main(command + ["--video", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("amn: error: --video") and why in err, err
    assert main(command + ["--gif"]) == 2
    assert "--gif needs --video" in capsys.readouterr().err
    assert main(command + ["--episodes", "0"]) == 2
    assert "--episodes 0 needs --video" in capsys.readouterr().err
    video_dir = tmp_path / "videos"
    video_dir.mkdir()
    assert main(command + ["--video", str(video_dir), "--video-max-frames", "0"]) == 2
    assert "--video-max-frames must be >= 1" in capsys.readouterr().err
    assert list(video_dir.iterdir()) == []
