"""Replay memory: frames stored once, stacks rebuilt exactly, never across episode starts."""

from __future__ import annotations

import numpy as np
import pytest

from amn.replay import GameReplay


def frame(k: int) -> np.ndarray:
    """A recognisable 84x84 frame: every pixel equals k (k in 1..255; 0 is the padding)."""
    return np.full((84, 84), k, dtype=np.uint8)


def env_like_stacks(episode_lengths: list[int]):
    """Observations as AtariVectorEnv returns them: [0,0,0,f0], [0,0,f0,f1], ... per episode."""
    obs, starts, k = [], [], 1
    for length in episode_lengths:
        history: list[np.ndarray] = []
        for t in range(length):
            history.append(frame(k))
            k += 1
            stack = np.zeros((4, 84, 84), dtype=np.uint8)
            recent = history[-4:]
            stack[4 - len(recent):] = recent
            obs.append(stack)
            starts.append(t == 0)
    return np.stack(obs), np.array(starts)


def fill(replay: GameReplay, obs: np.ndarray, starts: np.ndarray) -> None:
    for i in range(len(obs)):
        target = np.zeros((1, 18), dtype=np.float32)
        target[0, i % 6] = 1.0
        replay.add(obs[i:i + 1], starts[i:i + 1], target)


def test_stacks_match_env_observations_across_episode_starts():
    obs, starts = env_like_stacks([2, 5, 1, 7])  # includes episodes shorter than a stack
    replay = GameReplay(100)
    fill(replay, obs, starts)
    idx = np.arange(len(obs))
    rebuilt = replay.stacks(np.zeros_like(idx), idx)
    np.testing.assert_array_equal(rebuilt, obs)
    # the first state of each episode is [0, 0, 0, f0]: zeros, not the first frame repeated
    assert (rebuilt[2, :3] == 0).all() and (rebuilt[2, 3] == 3).all()


def test_ring_wraparound_never_samples_overwritten_history():
    obs, starts = env_like_stacks([40, 50])
    replay = GameReplay(32)
    fill(replay, obs, starts)
    assert replay.full and len(replay) == 32
    # every sample must equal the observation it was stored from
    by_last = {int(o[-1, 0, 0]): o for o in obs}
    rng = np.random.default_rng(0)
    for _ in range(20):
        batch = replay.sample(16, rng)
        for o in batch["obs"].numpy():
            np.testing.assert_array_equal(o, by_last[int(o[-1, 0, 0])])


def test_multiple_envs_keep_separate_streams():
    a, sa = env_like_stacks([6, 6])
    b, sb = env_like_stacks([3, 9])
    b = np.where(b > 0, b + 100, 0).astype(np.uint8)
    replay = GameReplay(40, num_envs=2)
    for i in range(len(a)):
        replay.add(np.stack([a[i], b[i]]), np.array([sa[i], sb[i]]), np.full((2, 18), 1 / 18, np.float32))
    idx = np.arange(len(a))
    np.testing.assert_array_equal(replay.stacks(np.zeros_like(idx), idx), a)
    np.testing.assert_array_equal(replay.stacks(np.ones_like(idx), idx), b)


def test_sample_shapes_targets_and_memory_per_transition():
    obs, starts = env_like_stacks([10])
    replay = GameReplay(1000, store_values=True)
    for i in range(len(obs)):
        replay.add(obs[i:i + 1], starts[i:i + 1], np.full((1, 18), 1 / 3, np.float32) * (np.arange(18) < 3),
                   values=np.ones((1, 18), np.float32))
    batch = replay.sample(8, np.random.default_rng(1))
    assert batch["obs"].shape == (8, 4, 84, 84) and batch["obs"].dtype.is_floating_point is False
    assert batch["target"].shape == (8, 18)
    np.testing.assert_allclose(batch["target"].sum(1).numpy(), 1.0, atol=1e-6)  # float16 storage renormalised
    assert batch["values"].shape == (8, 18)
    assert GameReplay(1000).bytes_per_transition <= 7.5 * 1024


def test_empty_replay_refuses_to_sample():
    with pytest.raises(ValueError):
        GameReplay(100).sample(4, np.random.default_rng(0))


def test_real_env_observations_are_rebuilt_bit_identical():
    """Against AtariVectorEnv itself (SAME_STEP autoreset): random play through episode ends."""
    from experts.atari import EnvSettings, make_atari_vec

    env = make_atari_vec("Pong", 1, settings=EnvSettings(max_frames=400))  # short games: several episode starts
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    start = np.array([True])
    replay = GameReplay(1000)
    seen = []
    for _ in range(300):
        replay.add(obs, start, np.full((1, 18), 1 / 18, np.float32))
        seen.append(obs[0].copy())
        obs, _, term, trunc, _ = env.step(rng.integers(0, 6, 1))
        start = term | trunc
    env.close()
    idx = np.arange(len(seen))
    assert replay.starts[0].sum() >= 2  # crossed at least one episode boundary
    np.testing.assert_array_equal(replay.stacks(np.zeros_like(idx), idx), np.stack(seen))


def test_life_loss_view_matches_replay_rebuild():
    """A life loss starts a new stack: the training view and the rebuilt stack agree."""
    from amn.collect import Collector

    frames = [frame(k) for k in range(1, 11)]
    life_lost_at = 5  # the obs returned at step 5 is the first of the new stack
    replay, views, since = GameReplay(50), [], 0
    for t in range(len(frames)):
        raw = np.zeros((1, 4, 84, 84), dtype=np.uint8)
        recent = frames[max(0, t - 3):t + 1]
        raw[0, 4 - len(recent):] = recent  # what the env returns: no reset at a life loss
        since = 0 if t in (0, life_lost_at) else min(since + 1, 3)
        view = Collector._training_view(raw, np.array([since]))
        replay.add(view, np.array([since == 0]), np.full((1, 18), 1 / 18, np.float32))
        views.append(view[0])
    assert (views[life_lost_at][:3] == 0).all() and (views[life_lost_at + 1][2] == life_lost_at + 1).all()
    idx = np.arange(len(frames))
    np.testing.assert_array_equal(replay.stacks(np.zeros_like(idx), idx), np.stack(views))


@pytest.mark.parametrize("pipeline", ["ale_py.AtariVectorEnv", "sb3.AtariWrapper"])
def test_training_view_after_a_real_life_loss_follows_the_experts_pipeline(pipeline):
    """Breakout, random play until a life is lost: the state the expert labels next keeps the
    older frames for an expert of `amn experts train`, and zeroes them for an rl-zoo expert."""
    import torch

    from amn.collect import Collector
    from amn.config import from_dict
    from amn.student import Student
    from experts import Expert
    from experts.network import ExpertNetwork

    expert = Expert(ExpertNetwork(4), "Breakout", "ppo", {"observation_pipeline": pipeline})
    cfg = from_dict({"games": [{"game": "Breakout", "expert": "unused"}], "learning_starts_per_game": 100,
                     "replay_capacity_per_game": 3000})
    collector = Collector(cfg, [expert], [GameReplay(3000)], seed=0)
    slot, rng = collector.slots[0], np.random.default_rng(0)
    torch.manual_seed(0)
    student = Student(1)
    try:
        for _ in range(2000):
            lives = slot.tracker.lives.copy()
            collector.step(student, 1.0, rng)
            if (slot.tracker.lives < lives).any() and slot.tracker.lives.min() > 0:
                break
        else:
            pytest.fail("no life lost in 2000 random Breakout steps")
    finally:
        collector.close()
    older = slot.obs[0, :3]
    if pipeline == "sb3.AtariWrapper":
        assert slot.starts[0] and (older == 0).all()
    else:
        assert not slot.starts[0] and (older > 0).any()
