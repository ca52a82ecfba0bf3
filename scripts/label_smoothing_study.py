"""CC-LS: label smoothing with the continuous-categorical loss (Gordon-Rodriguez et al. 2020).

    nice -n 19 python scripts/label_smoothing_study.py                    # MNIST-1D, offline (docs/cc_ls.md)
    python scripts/label_smoothing_study.py --dataset cifar10 --data-dir ~/data/cifar-10-batches-py
    python scripts/label_smoothing_study.py --report-only                 # tables and plots from the JSONs

Trains the small CNN of :mod:`amn.classify_model` with each variant (``ce`` on hard labels,
``ce-ls`` and ``cc-ls/{guarded,authors,naive}`` on y_LS = (1 − ε)·onehot + ε/K, ``squentropy``
on hard labels), with and without BatchNorm, for each weight decay and seed. Each run's result
goes to ``<out-dir>/runs/<dataset>/<run>.json`` (rerunning skips finished runs); the reports,
``<dataset>_table.{md,csv}``, ``<dataset>_runs.csv`` and ``<dataset>_{accuracy,reliability,curves}.png``,
to ``<out-dir>``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from amn.classify import DEFAULT_VARIANTS, VARIANTS  # noqa: E402
from amn.classify_data import DATASETS, load_dataset  # noqa: E402
from amn.classify_report import load_records, write_report  # noqa: E402
from amn.classify_study import run_study, study_configs  # noqa: E402

BATCHNORM = {"off": [False], "on": [True], "both": [False, True]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="mnist1d")
    p.add_argument("--data-dir", type=Path, help="cifar10: the extracted cifar-10-batches-py folder")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(DEFAULT_VARIANTS))
    p.add_argument("--batchnorm", choices=list(BATCHNORM), default="both")
    p.add_argument("--weight-decays", nargs="+", type=float, default=[0.0],
                   help="AdamW decoupled weight decay per run (0: Adam); several values add a grid axis")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epsilon", type=float, default=0.1, help="label-smoothing ε")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--train-size", type=int, help="use the first N training samples")
    p.add_argument("--test-size", type=int, help="use the first N test samples")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: best on a shared CPU)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs/results/cc_ls")
    p.add_argument("--report-only", action="store_true", help="only rebuild the reports from the run JSONs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs_dir = args.out_dir / "runs" / args.dataset
    if not args.report_only:
        torch.set_num_threads(args.threads)
        configs = study_configs(args.dataset, args.variants, BATCHNORM[args.batchnorm], args.weight_decays,
                                args.seeds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                epsilon=args.epsilon, dropout=args.dropout, train_size=args.train_size,
                                test_size=args.test_size)
        try:
            split = load_dataset(args.dataset, args.data_dir)
            cpu = platform.processor() or platform.machine()
            print(f"{args.dataset}: {len(split.y_train)} train / {len(split.y_test)} test, {len(configs)} runs, "
                  f"torch {torch.__version__}, {args.threads} thread(s), {cpu}", flush=True)
            start = time.perf_counter()
            run_study(configs, split, runs_dir, log=lambda line: print(line, flush=True))
        except (FileNotFoundError, ImportError, ValueError) as err:  # each is one line that says what to do
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"study wall time {time.perf_counter() - start:.0f} s", flush=True)
    records = load_records(runs_dir)
    for path in write_report(records, args.out_dir, args.dataset):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
