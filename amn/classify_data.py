"""Data for the label-smoothing study (CC-LS): CIFAR-10 from its python pickle batches, and
MNIST-1D generated offline.

Every loader returns a :class:`Split`: float32 inputs, standardised with the training set's
statistics, and int64 labels. Shapes: CIFAR-10 ``[N, 3, 32, 32]``, MNIST-1D ``[N, 1, 40]``.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DATASETS", "Split", "load_cifar10", "load_dataset", "make_mnist1d"]

DATASETS = ("mnist1d", "cifar10")
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_SUBDIR = "cifar-10-batches-py"
_CIFAR_HOWTO = (
    "download cifar-10-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html) on a machine with "
    "internet, extract it (tar xzf cifar-10-python.tar.gz) and pass --data-dir .../cifar-10-batches-py"
)


@dataclass
class Split:
    """A train/test split: ``x_*`` float32 ``[N, C, ...]``, ``y_*`` int64 ``[N]`` in [0, K)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def subset(self, n_train: int | None, n_test: int | None) -> Split:
        """The first ``n_train`` / ``n_test`` samples (None keeps all); errors if too few exist."""
        for what, n, have in (("train", n_train, len(self.y_train)), ("test", n_test, len(self.y_test))):
            if n is not None and not 0 < n <= have:
                raise ValueError(f"{self.name}: --{what}-size {n} must be in 1..{have}")
        return Split(self.name, self.x_train[:n_train], self.y_train[:n_train],
                     self.x_test[:n_test], self.y_test[:n_test], self.num_classes)


def _standardise(x_train: np.ndarray, x_test: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    # Training statistics only, so the test set stays unseen.
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True) + 1e-7
    return (x_train - mean) / std, (x_test - mean) / std


# --------------------------------------------------------------------------- CIFAR-10


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: ``(images uint8 [N, 3, 32, 32], labels int64 [N])``.

    The format (www.cs.toronto.edu/~kriz/cifar.html): a pickled dict with bytes keys,
    ``b"data"`` uint8 ``[N, 3072]`` (1024 red, then green, then blue values, each a
    row-major 32×32 image) and ``b"labels"`` a list of N ints in 0..9. Pickles can run code:
    load only files you downloaded yourself.
    """
    with path.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")  # written by Python 2: bytes keys
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 python batch (needs keys b'data' and b'labels'); "
                         f"re-extract cifar-10-python.tar.gz")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{path}: data {data.shape} and {len(labels)} labels, expected [N, 3072] and N; "
                         f"re-extract cifar-10-python.tar.gz")
    if labels.size and not (0 <= labels.min() and labels.max() < 10):
        raise ValueError(f"{path}: labels outside 0..9; re-extract cifar-10-python.tar.gz")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | Path) -> Split:
    """CIFAR-10 from ``data_dir`` (the extracted ``cifar-10-batches-py``, or the folder holding it).

    Returns 50,000 train and 10,000 test images, ``[N, 3, 32, 32]`` float32, standardised
    per channel with the training set's mean and standard deviation.
    Raises ``FileNotFoundError`` (one line, how to get the files) when any batch is missing.
    """
    root = Path(data_dir)
    if (root / CIFAR_SUBDIR).is_dir():  # the folder tar extracted into
        root = root / CIFAR_SUBDIR
    missing = [n for n in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE) if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 not found in {root} (missing {', '.join(missing)}): {_CIFAR_HOWTO}")
    parts = [_read_cifar_batch(root / n) for n in CIFAR_TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_cifar_batch(root / CIFAR_TEST_FILE)
    x_train, x_test = _standardise(x_train, x_test.astype(np.float32) / 255.0, axes=(0, 2, 3))
    return Split("cifar10", torch.from_numpy(x_train.astype(np.float32)), torch.from_numpy(y_train),
                 torch.from_numpy(x_test.astype(np.float32)), torch.from_numpy(y_test), 10)


# --------------------------------------------------------------------------- MNIST-1D


def make_mnist1d(num_samples: int = 5000, data_seed: int = 42) -> Split:
    """MNIST-1D (Greydanus 2020), generated here by the ``mnist1d`` package: no download.

    The package's default recipe (templates of the 10 digits padded, scaled, translated,
    sheared and noised, subsampled to length 40), 80 % train / 20 % test: with 5,000
    samples, 4,000 train and 1,000 test signals ``[N, 1, 40]``, standardised once more with
    the training set's statistics. ``data_seed`` fixes the data set, not the training run.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError(f"MNIST-1D needs the mnist1d package ({err}); pip install -e . (or pip install mnist1d)") from err
    args = get_dataset_args()
    args.num_samples, args.seed = int(num_samples), int(data_seed)
    # make_dataset seeds the global numpy and random generators: restore them afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x_train, x_test = _standardise(data["x"].astype(np.float64), data["x_test"].astype(np.float64), axes=(0, 1))
    to_x = lambda a: torch.from_numpy(a.astype(np.float32)).unsqueeze(1)  # noqa: E731  [N, 40] -> [N, 1, 40]
    to_y = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    return Split("mnist1d", to_x(x_train), to_y(data["y"]), to_x(x_test), to_y(data["y_test"]), 10)


def load_dataset(name: str, data_dir: str | Path | None = None) -> Split:
    """The data set ``name`` in :data:`DATASETS`; ``cifar10`` needs ``data_dir``."""
    if name == "mnist1d":
        return make_mnist1d()
    if name == "cifar10":
        if data_dir is None:
            raise FileNotFoundError(f"cifar10 needs --data-dir: {_CIFAR_HOWTO}")
        return load_cifar10(data_dir)
    raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
