"""Tiny SB3 models for the expert tests, built (not trained) with their weights perturbed so every
layer matters.

The fixtures ``pong_obs`` and ``ppo_zip`` (tests/conftest.py) build on these; used by
tests/test_experts.py and tests/test_expert_errors.py.
"""

from __future__ import annotations

import pytest
import torch


def perturb(module: torch.nn.Module) -> None:
    # SB3 initialises heads with gain 0.01: outputs near 0 would make the comparison vacuous.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def build(algo: str, **policy_kwargs):
    from experts.sb3_vec_env import AleVecEnv

    env = AleVecEnv("Pong", 1)
    if algo == "ppo":
        from stable_baselines3 import PPO

        model = PPO("CnnPolicy", env, n_steps=8, batch_size=8, policy_kwargs=policy_kwargs, device="cpu", seed=0)
    elif algo == "a2c":
        from stable_baselines3 import A2C

        model = A2C("CnnPolicy", env, n_steps=5, device="cpu", seed=0)
    elif algo == "dqn":
        from stable_baselines3 import DQN

        model = DQN("CnnPolicy", env, buffer_size=100, learning_starts=0, device="cpu", seed=0)
    else:
        sb3_contrib = pytest.importorskip("sb3_contrib", reason="sb3-contrib (the 'zoo' extra) is not installed")
        model = sb3_contrib.QRDQN("CnnPolicy", env, buffer_size=100, learning_starts=0, device="cpu", seed=0)
    perturb(model.policy)
    env.close()
    return model


def one_line(err: pytest.ExceptionInfo) -> str:
    """The error's message, asserted to be one line."""
    msg = str(err.value)
    assert "\n" not in msg
    return msg
