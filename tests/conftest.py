"""Shared test setup: the helper modules beside the tests on the path, and the expert tests' fixtures."""

import sys
from pathlib import Path

import numpy as np
import pytest

# cc_reference.py (the mpmath reference), fp_bounds.py (rounding bounds), loss_cases.py and
# expert_models.py live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

from expert_models import build  # noqa: E402  (needs the path above)


@pytest.fixture(scope="module")
def pong_obs() -> np.ndarray:
    """Real Pong observations ``uint8 [4, 4, 84, 84]`` after some random play."""
    from experts.atari import make_atari_vec

    env = make_atari_vec("Pong", 4)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(80):
        obs, *_ = env.step(rng.integers(0, 6, 4))
    env.close()
    return obs


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory) -> tuple[Path, object]:
    """A tiny PPO (expert_models.build) saved as ``ppo-PongNoFrameskip-v4.zip``: (path, model)."""
    model = build("ppo")
    path = tmp_path_factory.mktemp("ppo") / "ppo-PongNoFrameskip-v4.zip"
    model.save(path)
    return path, model
