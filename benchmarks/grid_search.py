"""A 2-worker grid search against a serial one, and how many torch threads each fit ran on.

    python benchmarks/grid_search.py [--epochs 20] [--repeats 2]

GridSearchCV over 4 candidates x 3 folds (12 fits) on scikit-learn's digits, run serially (on torch's
default threads, and on one) and on two workers through joblib's process backend (loky), its
threading backend and an in-process Dask cluster. The fastest of ``--repeats`` runs is shown, so
that starting loky's worker processes (each imports torch) counts once at most. Each fit reports
torch.get_num_threads() from inside training, so the table shows whether the workers together asked
for more threads than the machine has cores ("oversubscribed"). The last row pins every fit of the
threading run to all cores, which is what happens without the estimator running torch on one
thread per call.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import joblib
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from protoattn import IDWAttentionClassifier


class ThreadReporting(IDWAttentionClassifier):
    """Records the torch threads its training runs on, in ``threads_``."""

    def _fit_network(self, *args, **kwargs):
        self.threads_ = torch.get_num_threads()
        return super()._fit_network(*args, **kwargs)


class AllCores(ThreadReporting):
    """Trains on every core whatever else runs: the oversubscribed baseline."""

    def _fit_network(self, *args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count())
        try:
            return super()._fit_network(*args, **kwargs)
        finally:
            torch.set_num_threads(before)


def threads_used(estimator, X, y):
    return estimator.threads_


def search(estimator, n_jobs):
    return GridSearchCV(
        estimator,
        {"n_prototypes": [50, 100], "power": [8.0, "auto"]},
        cv=3,
        n_jobs=n_jobs,
        scoring={"accuracy": "accuracy", "threads": threads_used},
        refit="accuracy",
    )


def run(name, estimator, n_jobs, X, y, repeats, backend="loky", threads=None):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with joblib.parallel_config(backend=backend), threadpool_limits(limits=threads, user_api="openmp"):
            fitted = search(estimator, n_jobs).fit(X, y)
        times.append(time.perf_counter() - start)
    results = fitted.cv_results_
    threads = np.concatenate([results[f"split{k}_test_threads"] for k in range(3)]).astype(int)
    return name, n_jobs, min(times), threads, fitted.best_score_


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="max_epochs of every fit")
    parser.add_argument("--repeats", type=int, default=2, help="runs per row; the fastest is shown")
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    model = ThreadReporting(max_epochs=args.epochs, random_state=0)
    cores = os.cpu_count()
    print(
        f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average before {os.getloadavg()[0]:.1f}"
    )
    rows = [
        run("serial", model, 1, X, y, args.repeats),
        run("serial, 1 thread", model, 1, X, y, args.repeats, threads=1),
        run("loky processes", model, 2, X, y, args.repeats),
        run("threads", model, 2, X, y, args.repeats, backend="threading"),
    ]
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        rows.append(run("dask, in-process workers", model, -1, X, y, args.repeats, backend="dask"))
    rows.append(
        run(
            "threads, all cores per fit",
            AllCores(max_epochs=args.epochs, random_state=0),
            2,
            X,
            y,
            args.repeats,
            backend="threading",
        )
    )
    serial = rows[0][2]
    print(f"\nGridSearchCV, digits, 12 fits of max_epochs={args.epochs}; load average after {os.getloadavg()[0]:.1f}\n")
    print("| run | workers | wall s | vs serial | torch threads per fit (fits) | fits oversubscribed | best accuracy |")
    print("|---|---|---|---|---|---|---|")
    for name, n_jobs, seconds, threads, best in rows:
        workers = 1 if n_jobs == 1 else 2
        counts = ", ".join(f"{t} (x{n})" for t, n in zip(*np.unique(threads, return_counts=True), strict=True))
        over = int(np.sum(workers * threads > cores))
        print(
            f"| {name} | {workers} | {seconds:.1f} | {serial / seconds:.2f}x | {counts} | {over} of {len(threads)} "
            f"| {best:.4f} |"
        )


if __name__ == "__main__":
    main()
