"""What FIRE after a life loss changes, on Breakout (docs/training.md, "What the agent does after a life loss").

    .venv/bin/python scripts/measure_life_loss_fire.py      # ~75 s on two cores

Breakout, 5 games each, ε 0.01, seed 0, 108k-frame cap, torch 1 thread:
(1) the shipped `breakout` expert (AtariVectorEnv pipeline) through the evaluation and the
    collector, FIRE after a life loss off and on;
(2) the same expert with FIRE masked out, standing in for a zoo expert (its AtariWrapper always
    pressed FIRE for it): agent steps from each life loss until FIRE is sent, scores, game lengths.
"""
import time
import numpy as np
import torch

torch.set_num_threads(1)
from amn.collect import play_through_collector
from amn.evaluation import play_games
from experts import load_expert
from experts.atari import PIPELINE_SB3, LifeLossFire, life_losses, make_atari_vec

EPISODES, EPS, SEED = 5, 0.01, 0
expert = load_expert("breakout")
FIRE = expert.action_meanings.index("FIRE")


def never_fire(obs):
    q = expert.values(obs)
    q[:, FIRE] = -torch.inf
    return q.argmax(1).numpy()


def show(label, returns, t0):
    print(f"{label:58s} mean {np.mean(returns):6.1f} ± {np.std(returns, ddof=1):5.1f}  {returns}  ({time.monotonic() - t0:.0f} s)", flush=True)


for fire in (False, True):
    t0 = time.monotonic()
    show(f"evaluation, shipped expert, fire_after_life_loss={fire}",
         play_games(expert.act, "Breakout", EPISODES, epsilon=EPS, seed=SEED, num_envs=EPISODES,
                    fire_after_life_loss=fire, progress=False), t0)
for fire in (False, True):
    t0 = time.monotonic()
    e = load_expert("breakout")
    if fire:
        e.observation_pipeline = PIPELINE_SB3  # FIRE after a life loss only; its stack view stays the ALE one
    show(f"collector, shipped expert, FIRE after life loss={fire}",
         play_through_collector(e, EPISODES, epsilon=EPS, seed=SEED), t0)


def never_fire_games(fire_after: bool):
    """One game per env; returns scores, lengths (agent steps), waits (agent steps from a life loss to FIRE sent)."""
    n = EPISODES
    env = make_atari_vec("Breakout", n)
    obs, info = env.reset(seed=SEED)
    lives, rng = info["lives"].copy(), np.random.default_rng(SEED)
    presser = LifeLossFire.for_game("Breakout", n, full_actions=False) if fire_after else None
    score, length, over = np.zeros(n), np.zeros(n, int), np.zeros(n, bool)
    waiting = np.full(n, -1)  # agent steps since the life loss, -1 when not waiting
    waits, scores, lengths = [], [None] * n, [None] * n
    while not over.all():
        a = never_fire(obs)
        explore = rng.random(n) < EPS
        a[explore] = rng.integers(0, len(expert.action_set), int(explore.sum()))
        if presser is not None:
            a = presser.override(a)
        served = (waiting >= 0) & (a == FIRE)
        for i in np.flatnonzero(served & ~over):
            waits.append(int(waiting[i]) + 1)  # +1: the FIRE step itself
        waiting[served] = -1
        obs, r, term, trunc, info = env.step(a)
        done = term | trunc
        lost = life_losses(lives, info["lives"], done)
        lives = info["lives"].copy()
        if presser is not None:
            presser.observe(lost)
        waiting[waiting >= 0] += 1
        waiting[lost] = 0
        score[~over] += r[~over]
        length[~over] += 1
        for i in np.flatnonzero(done & ~over):
            scores[i], lengths[i] = float(score[i]), int(length[i])
        over |= done
    env.close()
    return scores, lengths, waits


for fire in (False, True):
    t0 = time.monotonic()
    s, l, w = never_fire_games(fire)
    show(f"never-FIRE policy, FIRE after life loss={fire}", s, t0)
    print(f"    game lengths (agent steps) {l}; life losses {len(w)}; steps from life loss to FIRE: "
          f"mean {np.mean(w):.0f}, median {np.median(w):.0f}, max {max(w)}; "
          f"{sum(w)} of {sum(l)} agent steps ({100 * sum(w) / sum(l):.0f} %) waiting", flush=True)
