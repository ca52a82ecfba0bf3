"""The student trainer end to end: real ALE, the shipped Pong expert, tiny budgets."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from amn.cli import main
from amn.config import load_config
from amn.resume import load_run_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
pytestmark = pytest.mark.slow

# Small enough for a loaded 2-core machine; learning starts early so updates happen.
TINY = ["learning_starts_per_game=100", "replay_capacity_per_game=1000", "log_every_agent_steps=100"]


def tiny_config(*extra: str):
    return load_config(SMOKE, TINY + list(extra))


def counters(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]


def scalars(run_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def as_if_trained_on_gpu(run_dir: Path, monkeypatch) -> None:
    """Rewrite a CPU run as a CUDA run leaves it: ``device: cuda`` in its config, and every tensor of
    its checkpoint stored as a CUDA tensor (storage location ``cuda:0``)."""
    import yaml

    path = run_dir / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["config"]["device"] = "cuda"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(ckpt["config"], sort_keys=False))
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(ckpt, path)
    if not torch.cuda.is_available():  # the rewrite took: a plain load refuses it here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=False)


def test_smoke_config_end_to_end(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train-student", "--config", str(SMOKE), "--run-dir", str(run), "--no-progress",
                 "--set", "total_agent_steps=1200", "--set", "learning_starts_per_game=300"]) == 0
    out = capsys.readouterr().out
    assert "Pong" in out and "IQM expert-normalised" in out  # the table printed at the end of training
    assert (run / "checkpoint.pt").is_file() and (run / "config.yaml").is_file()
    assert counters(run)["agent_steps"] == 1200 and counters(run)["updates"] > 100

    tags = scalars(run)
    for tag in ["Pong/policy_regression_loss", "Pong/episode_return", "Pong/student_entropy",
                "Pong/target_entropy", "Pong/loss_diag/rows", "train/epsilon", "train/lr",
                "train/grad_norm", "perf/agent_steps_per_s"]:
        assert tag in tags, f"{tag} missing from TensorBoard; have {sorted(tags)}"
    assert all(np.isfinite(e.value) for e in tags["Pong/policy_regression_loss"])

    # A GPU run's checkpoint evaluates on a CPU machine (load_checkpoint maps it to the CPU) ...
    as_if_trained_on_gpu(run, monkeypatch)
    report_json, plot_png = tmp_path / "eval.json", tmp_path / "eval.png"
    assert main(["evaluate", str(run), "--episodes", "1", "--max-frames", "2000", "--no-progress",
                 "--json", str(report_json), "--plot", str(plot_png)]) == 0
    table = capsys.readouterr().out
    assert "student" in table and "human-norm" in table and "IQM" in table
    report = json.loads(report_json.read_text())
    row = report["games"][0]
    assert row["game"] == "Pong" and len(row["student"]["returns"]) == 1
    assert {"expert_normalised", "human_normalised", "expert_source"} <= row.keys()
    assert len(report["aggregate"]["ci95"]) == 2
    assert plot_png.stat().st_size > 1000

    # ... and resumes there when told to: --set device=cpu.
    assert main(["train-student", "--run-dir", str(run), "--resume", "--no-progress", "--no-eval",
                 "--set", "device=cpu", "--set", "total_agent_steps=1300"]) == 0
    assert counters(run)["agent_steps"] == 1300 and counters(run)["resumes"] == 1


def test_kill_9_then_resume_continues_counters(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "amn", "train-student", "--config", str(SMOKE), "--run-dir", str(run),
            "--no-progress", "--no-eval", "--set", "total_agent_steps=100000", "--set", "checkpoint_minutes=0.02"]
    args += [a for s in TINY for a in ("--set", s)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ckpt = run / "checkpoint.pt"
            if ckpt.is_file() and counters(run)["updates"] > 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint with updates within 120 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = counters(run)
    target = before["agent_steps"] + 300
    assert main(["train-student", "--run-dir", str(run), "--resume", "--no-progress", "--no-eval",
                 "--set", f"total_agent_steps={target}"]) == 0
    after = counters(run)
    assert after["agent_steps"] == target
    assert after["lockstep_steps"] == before["lockstep_steps"] + 300
    assert after["resumes"] == before["resumes"] + 1
    assert after["updates"] >= before["updates"]  # replay refilled first: updates resume after the warm-up


def test_sigterm_checkpoints_and_masked_actions_never_learn(tmp_path, monkeypatch):
    """SIGTERM mid-run saves a checkpoint; output units of Pong's invalid actions get no gradient."""
    from amn import collect, trainer

    cfg = tiny_config("total_agent_steps=100000")
    calls = {"n": 0}
    real_step = collect.Collector.step

    def step_then_sigterm(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 401:  # SIGTERM lands in the 401st step, which still completes
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, *a, **k)

    torch.manual_seed(cfg.seed)
    initial = collect.Student(1).state_dict()  # Student's init is seeded the same way in train()
    monkeypatch.setattr(collect.Collector, "step", step_then_sigterm)
    summary = trainer.train(cfg, tmp_path / "run", progress=False, evaluate=False)
    assert summary["status"] == "interrupted" and summary["agent_steps"] == 401
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["counters"]["agent_steps"] == 401 and ckpt["counters"]["updates"] > 0

    from experts.atari import minimal_action_set

    invalid = sorted(set(range(18)) - set(minimal_action_set("Pong")))
    w0, w1 = initial["heads.0.weight"], ckpt["student"]["heads.0.weight"]
    assert torch.equal(w0[invalid], w1[invalid]), "an invalid action's output unit was trained"
    assert not torch.equal(w0[minimal_action_set("Pong")], w1[minimal_action_set("Pong")])


def test_epsilon_greedy_actor_only_picks_valid_actions():
    from amn.collect import Collector
    from amn.replay import GameReplay
    from amn.student import Student
    from experts.atari import PIPELINE_SB3, minimal_action_set

    class FakeExpert:  # acting needs only the action set (and how to view a life loss)
        action_set = minimal_action_set("Pong")
        life_loss_restarts_stack = True
        observation_pipeline = PIPELINE_SB3  # the collector asks it whether to press FIRE after a life loss

    cfg = tiny_config("envs_per_game=4")
    collector = Collector(cfg, [FakeExpert()], [GameReplay(100, 4)], seed=0)
    student = Student(1)
    with torch.no_grad():  # make every invalid action the student's favourite
        invalid = sorted(set(range(18)) - set(FakeExpert.action_set))
        student.heads[0].bias[invalid] = 1e6
    rng = np.random.default_rng(0)
    try:
        for epsilon in (0.0, 1.0, 0.5):
            actions = np.concatenate([collector.act(student, epsilon, rng) for _ in range(50)])
            assert set(actions.tolist()) <= set(FakeExpert.action_set)
        assert len(set(actions.tolist())) == len(FakeExpert.action_set)  # exploration covers all valid ones
    finally:
        collector.close()


def test_non_finite_loss_stops_with_step_and_game_and_keeps_checkpoint(tmp_path, monkeypatch, capsys):
    from amn import trainer

    run = tmp_path / "run"
    assert main(["train-student", "--config", str(SMOKE), "--run-dir", str(run), "--no-progress", "--no-eval",
                 "--set", "total_agent_steps=200", *[a for s in TINY for a in ("--set", s)]]) == 0
    good = hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest()

    real_make_loss = trainer.make_loss

    def poisoned(cfg):
        loss_fn = real_make_loss(cfg)
        calls = {"n": 0}

        def nan_after_a_few(logits, target, mask, expert_values=None):
            out = loss_fn(logits, target, mask, expert_values)
            calls["n"] += 1
            if calls["n"] >= 5:
                out.loss = out.loss * float("nan")
            return out

        nan_after_a_few.needs_expert_values = loss_fn.needs_expert_values
        return nan_after_a_few

    monkeypatch.setattr(trainer, "make_loss", poisoned)
    capsys.readouterr()
    code = main(["train-student", "--run-dir", str(run), "--resume", "--no-progress", "--no-eval",
                 "--set", "total_agent_steps=2000"])
    err = capsys.readouterr().err
    assert code == 1
    assert "non-finite policy-regression loss" in err and "agent step" in err and "Pong" in err
    assert re.search(r": (\d+) of \1 rows non-finite", err), err  # every row of the poisoned batch
    assert hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest() == good


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_overlapped_update_gives_the_same_run_as_sequential(tmp_path, monkeypatch, precision):
    """The update thread changes timing only: the same student, optimiser state and counters. In
    bfloat16 the overlapped loop acts through a bfloat16 copy of the weights, the sequential one
    through the float32 student under autocast (emulated where the CPU has no bfloat16 units).
    The overlapped run queues the next step's update behind the one in flight (between log points).
    In float32 a second one checkpoints at every step, so it queues none and draws every step's
    minibatches early, puts the rng back for the checkpoint and draws them again (the same code in
    either precision: one run of it is enough, and the suite's time counts)."""
    from amn.overlap import UpdateThread
    from amn.trainer import train

    queued_behind = []  # per submit: whether an update was in flight then
    real_submit = UpdateThread.submit

    def submit(self, minibatches, step):
        queued_behind.append(bool(self.in_flight))
        real_submit(self, minibatches, step)

    monkeypatch.setattr(UpdateThread, "submit", submit)
    ckpts = {}
    modes = {"sequential": ["overlap_update=false"], "queued": ["overlap_update=true"]}
    if precision == "float32":
        modes["checkpoint-every-step"] = ["overlap_update=true", "checkpoint_minutes=1e-9"]
    for mode, overrides in modes.items():
        run = tmp_path / mode
        queued_behind.clear()
        # 4 envs: an update at every lockstep step, so every step draws or queues its successor's.
        cfg = tiny_config("total_agent_steps=600", "envs_per_game=4", f"precision={precision}", *overrides)
        train(cfg, run, progress=False, evaluate=False)
        ckpts[mode] = torch.load(run / "checkpoint.pt", weights_only=True)
        if mode == "queued":  # log points every 25 steps and the last step queue nothing
            assert sum(queued_behind) > 0.8 * len(queued_behind) > 80, queued_behind
        if mode == "checkpoint-every-step":
            assert queued_behind and not any(queued_behind)
    sequential = ckpts.pop("sequential")
    assert sequential["counters"]["updates"] > 100
    for mode, threaded in ckpts.items():
        assert threaded["counters"] == sequential["counters"], mode
        for name, tensor in sequential["student"].items():
            assert torch.equal(threaded["student"][name], tensor), (mode, name)
        for i, state in sequential["optimizer"]["state"].items():
            assert all(torch.equal(threaded["optimizer"]["state"][i][k], v) for k, v in state.items()), (mode, i)
        # The overlapped loop draws the next step's minibatches early; its checkpoint has the rng from before them.
        assert threaded["rng"]["numpy"] == sequential["rng"]["numpy"], mode
        assert torch.equal(threaded["rng"]["torch"], sequential["rng"]["torch"]), mode
    from amn.student import Student

    torch.manual_seed(cfg.seed)  # the trainer's initial student: the updates did move it
    initial = Student(1).state_dict()
    assert all(not torch.equal(initial[k], sequential["student"][k]) for k in ("trunk.0.weight", "heads.0.weight"))


def _good_run(run: Path) -> str:
    """A finished 200-step run in ``run``; the sha256 of its checkpoint."""
    from amn.trainer import train

    train(tiny_config("total_agent_steps=200"), run, progress=False, evaluate=False)
    return hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize("signum, overlap", [(signal.SIGTERM, True), (signal.SIGINT, True), (signal.SIGINT, False)],
                         ids=["SIGTERM-overlap", "SIGINT-overlap", "SIGINT-sequential"])
def test_signal_during_a_diverging_update_still_raises_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch, signum, overlap):
    """Ctrl-C/SIGTERM while the update that diverges runs: NonFiniteLoss, not "interrupted" plus a checkpoint."""
    from amn import trainer

    run = tmp_path / "run"
    good = _good_run(run)

    def signal_then_diverge(self, batches, step):
        os.kill(os.getpid(), signum)
        time.sleep(0.2)  # the main thread gets the signal while this update is still running
        raise trainer.NonFiniteLoss(f"non-finite gradient norm at agent step {step}", step=step)

    monkeypatch.setattr(trainer.Learner, "update", signal_then_diverge)
    cfg = load_run_config(run, ["total_agent_steps=2000", f"overlap_update={str(overlap).lower()}"])
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(trainer.NonFiniteLoss, match="non-finite gradient norm"):
        trainer.train(cfg, run, resume=True, progress=False, evaluate=False)
    assert hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest() == good
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "sequential"])
def test_signal_during_a_good_update_checkpoints_that_step(tmp_path, monkeypatch, overlap):
    """The step whose update got the signal completes, is counted and checkpointed; the run says "interrupted"."""
    from amn import trainer

    real_update = trainer.Learner.update
    seen = []

    def signal_during_the_third(self, batches, step):
        seen.append(step)
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the signal arrives before the update computes
        real_update(self, batches, step)

    monkeypatch.setattr(trainer.Learner, "update", signal_during_the_third)
    cfg = tiny_config("total_agent_steps=100000", f"overlap_update={str(overlap).lower()}")
    summary = trainer.train(cfg, tmp_path / "run", progress=False, evaluate=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert summary["status"] == "interrupted"
    assert summary["agent_steps"] == ckpt["counters"]["agent_steps"] == seen[2] == seen[-1]
    assert ckpt["counters"]["updates"] == len(seen) == 3


def test_signal_during_the_final_checkpoint_waits_for_it(tmp_path, monkeypatch):
    """Ctrl-C while the last checkpoint is written: the file is written, then the run counts as interrupted."""
    from amn import trainer

    real_save = trainer.save_checkpoint

    def interrupted_save(path, payload):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        real_save(path, payload)

    monkeypatch.setattr(trainer, "save_checkpoint", interrupted_save)
    summary = trainer.train(tiny_config("total_agent_steps=200"), tmp_path / "run", progress=False, evaluate=True)
    assert summary["status"] == "interrupted" and summary["evaluation"] is None  # no evaluation after Ctrl-C
    assert counters(tmp_path / "run")["agent_steps"] == 200


def test_update_thread_uses_torch_threads(tmp_path, monkeypatch):
    """The update thread computes with cfg.torch_threads, also when the acting thread's count changes."""
    import threading

    from amn import collect, trainer

    real_update, real_step = trainer.Learner.update, collect.Collector.step
    threads = []

    def record_threads(self, batches, step):
        threads.append((threading.current_thread().name, torch.get_num_threads()))
        real_update(self, batches, step)

    def step_on_one_thread(self, *a, **k):
        torch.set_num_threads(1)  # e.g. acting code pinning its own thread count
        return real_step(self, *a, **k)

    monkeypatch.setattr(trainer.Learner, "update", record_threads)
    monkeypatch.setattr(collect.Collector, "step", step_on_one_thread)
    before = torch.get_num_threads()
    try:
        trainer.train(tiny_config("total_agent_steps=150", "torch_threads=3", "overlap_update=true"),
                      tmp_path / "run", progress=False, evaluate=False)
    finally:
        torch.set_num_threads(before)
    assert threads and all(name.startswith("amn-update") for name, _ in threads)
    assert {n for _, n in threads} == {3}
