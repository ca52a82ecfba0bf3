"""The label-smoothing study (CC-LS): CIFAR-10 reader, its missing-data error, ECE, and a tiny
end-to-end study through the script (result JSONs, the naive failure recorded, resume, reports)."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import amn.classify as classify
from amn.classify import RunConfig, smoothed_targets
from amn.classify_data import CIFAR_TEST_FILE, CIFAR_TRAIN_FILES, load_cifar10
from amn.classify_metrics import expected_calibration_error

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("label_smoothing_study", ROOT / "scripts/label_smoothing_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_cifar(root: Path, per_batch: int, n_test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A tiny CIFAR-10 in its own format: Python-2-style pickles (protocol 2, bytes keys)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    written = {}
    for name, n in [(f, per_batch) for f in CIFAR_TRAIN_FILES] + [(CIFAR_TEST_FILE, n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        with (root / name).open("wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (data, labels)
    return written


def test_cifar_reader_reads_the_pickle_format(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py", per_batch=4, n_test=3)
    # The folder tar extracted into is accepted as well as cifar-10-batches-py itself.
    for where in (tmp_path / "cifar-10-batches-py", tmp_path):
        split = load_cifar10(where)
        assert split.x_train.shape == (20, 3, 32, 32) and split.x_test.shape == (3, 3, 32, 32)
        assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
        labels = sum((written[f][1] for f in CIFAR_TRAIN_FILES), [])
        assert split.y_train.tolist() == labels
        assert split.y_test.tolist() == written[CIFAR_TEST_FILE][1]
    # Layout: row = 1024 red, 1024 green, 1024 blue values, each image row-major; standardised
    # per channel with the training set's statistics.
    raw = np.concatenate([written[f][0] for f in CIFAR_TRAIN_FILES]).reshape(-1, 3, 32, 32) / 255.0
    mean, std = raw.mean(axis=(0, 2, 3), keepdims=True), raw.std(axis=(0, 2, 3), keepdims=True) + 1e-7
    np.testing.assert_allclose(split.x_train.numpy(), (raw - mean) / std, rtol=1e-5, atol=1e-5)
    test_raw = written[CIFAR_TEST_FILE][0].reshape(-1, 3, 32, 32) / 255.0
    np.testing.assert_allclose(split.x_test.numpy(), (test_raw - mean) / std, rtol=1e-5, atol=1e-5)
    assert split.x_test[1, 2, 0, 5] == pytest.approx(float((written[CIFAR_TEST_FILE][0][1, 2048 + 5] / 255.0
                                                            - mean[0, 2, 0, 0]) / std[0, 2, 0, 0]), abs=1e-5)


def test_missing_cifar_dir_is_one_line_that_says_how(tmp_path, capsys):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(tmp_path / "nowhere")
    message = str(err.value)
    assert "\n" not in message and "cifar-10-python.tar.gz" in message and "--data-dir" in message
    # A folder with some batches missing names them.
    write_cifar(tmp_path / "partial", per_batch=2, n_test=2)
    (tmp_path / "partial" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing data_batch_3"):
        load_cifar10(tmp_path / "partial")
    # The script: exit status 2, one line on stderr, no traceback.
    rc = _script().main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"),
                         "--out-dir", str(tmp_path / "out")])
    err_text = capsys.readouterr().err
    assert rc == 2 and err_text.count("\n") == 1 and err_text.startswith("error: CIFAR-10 not found")


def test_ece_against_a_hand_example():
    # Confidences 0.9 and 0.88 share bin 13 of 15, (13/15, 14/15]; 0.82, 0.7 and 0.55 are alone in theirs.
    probs = torch.tensor([[0.9, 0.1], [0.88, 0.12], [0.18, 0.82], [0.3, 0.7], [0.45, 0.55]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 0])  # right, right, wrong, right, wrong
    ece, rel = expected_calibration_error(probs, labels)
    # (1/5)·(|2 − 1.78| + |0 − 0.82| + |1 − 0.7| + |0 − 0.55|)
    assert ece == pytest.approx((0.22 + 0.82 + 0.30 + 0.55) / 5, abs=1e-12)
    assert rel.count[13] == 2 and rel.count[12] == 1 and rel.count[10] == 1 and rel.count[8] == 1
    assert sum(rel.count) == 5 and rel.accuracy[12] == 0.0 and rel.confidence[13] == pytest.approx(0.89)
    assert rel.accuracy[0] is None  # empty bin
    # Right-closed bins: a confidence of exactly 1 is in the last bin, perfectly calibrated here.
    ece, rel = expected_calibration_error(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert ece == 0.0 and rel.count[14] == 1


def test_smoothed_targets():
    y = smoothed_targets(torch.tensor([2, 0]), 4, 0.1)
    assert torch.allclose(y[0], torch.tensor([0.025, 0.025, 0.925, 0.025]))
    assert torch.allclose(y.sum(-1), torch.ones(2))
    assert torch.equal(smoothed_targets(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))


def test_tiny_study_end_to_end(tmp_path, monkeypatch, capsys):
    write_cifar(tmp_path / "cifar", per_batch=40, n_test=60)  # 200 train images
    monkeypatch.setitem(classify.WIDTHS, "cifar10", (4, 8))  # a cheap CNN; the pipeline is the same
    out = tmp_path / "out"
    argv = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--out-dir", str(out),
            "--variants", "ce-ls", "cc-ls/guarded", "cc-ls/authors", "cc-ls/naive", "--batchnorm", "off", "--seeds", "0",
            "--epochs", "1", "--batch-size", "64"]
    script = _script()
    assert script.main(argv) == 0
    first = capsys.readouterr().out
    assert "[4/4]" in first and "ETA" in first

    runs = out / "runs" / "cifar10"
    for variant in ("ce-ls", "cc-ls-guarded"):
        record = json.loads((runs / f"{variant}_bn0_wd0_seed0.json").read_text())
        assert record["status"] == "ok" and record["failure"] is None and record["steps"] == 3
        assert record["config"] == {**record["config"], "dataset": "cifar10", "epochs": 1, "epsilon": 0.1,
                                    "batchnorm": False, "seed": 0}
        m = record["metrics"]
        for key in ("accuracy", "nll", "ece", "cc_mean_nll", "cc_mean_ece", "mean_confidence", "logit_gap",
                    "offclass_logit_std", "best_epoch_accuracy"):
            assert np.isfinite(m[key]), key
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["ece"] <= 1.0
        assert sum(record["reliability"]["softmax"]["count"]) == 60
        assert len(record["reliability"]["softmax"]["edges"]) == 16
        assert record["train_naive_check"]["rows"] == 3 * 64
        assert record["test_naive_check"]["rows"] == 60
        assert len(record["curve"]["test_accuracy"]) == 1
    guarded = json.loads((runs / "cc-ls-guarded_bn0_wd0_seed0.json").read_text())["train_diagnostics"]
    assert guarded["rows"] == 3 * 64 and guarded["nonfinite_rows"] == 0 and guarded["fallback_rows"] == 0
    authors = json.loads((runs / "cc-ls-authors_bn0_wd0_seed0.json").read_text())
    assert authors["status"] == "ok" and 0 <= authors["train_diagnostics"]["fallback_rows"] <= 3 * 64

    # naive: recorded as a failed run with where it went non-finite, not raised.
    naive = json.loads((runs / "cc-ls-naive_bn0_wd0_seed0.json").read_text())
    assert naive["status"] == "failed" and naive["metrics"] is None
    assert naive["failure"]["epoch"] == 1 and 1 <= naive["failure"]["step"] <= 3
    assert "non-finite" in naive["failure"]["reason"]

    # Reports.
    for name in ("table.md", "table.csv", "runs.csv", "accuracy.png", "reliability.png", "curves.png"):
        assert (out / f"cifar10_{name}").stat().st_size > 0, name
    table = (out / "cifar10_table.md").read_text()
    assert "`cc-ls/naive`" in table and "epoch 1 step" in table

    # Resume: every run is skipped; a changed config is an error, not a silent rerun.
    before = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert script.main(argv) == 0
    assert capsys.readouterr().out.count("done before, skipped") == 4
    assert before == {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert script.main([a if a != "1" else "2" for a in argv]) == 2  # --epochs 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "another config (epochs 1 -> 2)" in err_text


def test_run_config_rejects_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant"):
        RunConfig("mnist1d", "cc-ls/fast", batchnorm=False, seed=0).check()


def test_mnist1d_generates_offline_and_leaves_the_global_rng_alone():
    from amn.classify_data import make_mnist1d

    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    split = make_mnist1d(num_samples=200)
    assert np.random.rand() == expected  # make_dataset's global seeding was undone
    assert split.x_train.shape == (160, 1, 40) and split.x_test.shape == (40, 1, 40)
    assert split.y_train.dtype == torch.int64 and set(split.y_train.tolist()) <= set(range(10))
    assert abs(float(split.x_train.mean())) < 1e-5 and abs(float(split.x_train.std()) - 1.0) < 1e-2
    assert torch.equal(make_mnist1d(num_samples=200).x_test, split.x_test)  # data_seed fixes the data
