"""Time and memory of IDWAttentionClassifier against MLPClassifier on one synthetic problem.

50 000 training rows × 100 features, 10 classes; 100 prototypes against 100 hidden units, batch 256,
5 epochs for both. Then predict on 200 000 float32 rows and predict_proba on them as float32 and as
float64 (both estimators compute in the input's dtype), predict compared with a matmul of the same
size as the distance computation (torch's and numpy's, whose BLAS libraries differ), and the peak
extra memory of predict_proba on 1 000 000 rows (in a fresh process each).
Prints markdown tables; run from the repository root: ``python benchmarks/speed.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from _machine import describe
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from protoattn import IDWAttentionClassifier

N_TRAIN, N_PREDICT, N_MEMORY = 50_000, 200_000, 1_000_000
N_FEATURES, N_CLASSES, WIDTH, BATCH, EPOCHS = 100, 10, 100, 256, 5


def problem(seed=0):
    """Standardised float32 training rows and labels, and rows to predict from the same distribution."""
    X, y = make_classification(
        N_TRAIN + N_PREDICT, N_FEATURES, n_informative=30, n_classes=N_CLASSES, random_state=seed
    )
    X = StandardScaler().fit_transform(X).astype(np.float32)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:]


def models(seed=0):
    return {
        "MLPClassifier": MLPClassifier((WIDTH,), batch_size=BATCH, max_iter=EPOCHS, random_state=seed),
        "IDWAttentionClassifier": IDWAttentionClassifier(
            n_prototypes=WIDTH, batch_size=BATCH, max_epochs=EPOCHS, random_state=seed
        ),
    }


def best_time(function, repeats):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory_child(name):
    """In a fresh process: fit on a small sample, then the peak resident memory added by predict_proba
    at its first call on many rows and at its second."""
    X, y, _ = problem()
    model = models()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[:2000], y[:2000])
    rows = np.random.default_rng(0).standard_normal((N_MEMORY, N_FEATURES), dtype=np.float32)
    model.predict_proba(rows[:10])
    peaks = []
    for _ in range(2):
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets the peak resident set size (VmHWM) to the current one
        before = _status("VmRSS")
        model.predict_proba(rows)
        peaks.append((_status("VmHWM") - before) / 2**20)
    print(*peaks)


def _status(field):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_memory(name):
    if not os.path.exists("/proc/self/clear_refs"):
        return [float("nan")] * 2
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", name], capture_output=True, text=True, check=True
    ).stdout
    return [float(peak) for peak in out.split()[-2:]]  # first call, second call


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fit timings are the best of this many runs")
    parser.add_argument(
        "--predict-repeats",
        type=int,
        default=15,
        help="prediction timings are the best of this many runs (short and noisy: more rounds than fits)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch and BLAS threads for both estimators (default: each library's own)"
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return peak_memory_child(args.memory_child)
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    X, y, X_new = problem()
    X_new64 = X_new.astype(np.float64)
    # Times of each round, interleaved so that a busy moment hits both estimators alike; the order of
    # the two alternates between rounds, so that neither always runs after the other.
    fit, predict32, proba32, proba64 = ({name: [] for name in models()} for _ in range(4))
    accuracy, memory, fitted = {}, {}, {}

    def in_turn(items, round_):
        items = list(items)
        return items if round_ % 2 == 0 else items[::-1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for round_ in range(args.repeats):
            for name, model in in_turn(models().items(), round_):
                fit[name].append(best_time(lambda m=model: m.fit(X, y), 1))
                fitted[name] = model
    for name, model in fitted.items():
        accuracy[name] = model.score(X, y)
        model.predict_proba(X_new)  # warm-up: the first call in a process allocates its buffers
        model.predict_proba(X_new64)
    # The distance GEMM of the same size, timed in the same rounds: the bound prediction is held to.
    A = torch.from_numpy(X_new)
    B = torch.randn(WIDTH, N_FEATURES)
    gemms = {"torch": lambda: A @ B.T, "numpy": lambda: X_new @ B.numpy().T}
    gemm_times = {name: [] for name in gemms}
    for round_ in range(args.predict_repeats):
        for name, model in in_turn(fitted.items(), round_):
            predict32[name].append(best_time(lambda m=model: m.predict(X_new), 1))
            proba32[name].append(best_time(lambda m=model: m.predict_proba(X_new), 1))
            proba64[name].append(best_time(lambda m=model: m.predict_proba(X_new64), 1))
        for name, product in gemms.items():
            gemm_times[name].append(best_time(product, 1))
    for name in fitted:
        memory[name] = peak_memory(name)

    gemm_torch, gemm_numpy = min(gemm_times["torch"]), min(gemm_times["numpy"])
    faster = "numpy" if gemm_numpy <= gemm_torch else "torch"  # the bound: the faster library's matmul
    gemm = min(gemm_times[faster])

    def to_gemm(times):  # best time / best GEMM, and the median of the rounds' ratios
        return min(times) / gemm, float(np.median(np.array(times) / np.array(gemm_times[faster])))

    gflop = 2 * N_PREDICT * N_FEATURES * WIDTH / 1e9
    ours, mlp = "IDWAttentionClassifier", "MLPClassifier"
    predict_to_gemm, proba_to_gemm = to_gemm(predict32[ours]), to_gemm(proba32[ours])

    print(f"## Speed: {N_TRAIN:,} × {N_FEATURES} training rows, {N_CLASSES} classes, width {WIDTH}\n")
    print(
        f"{describe()}. Wall-clock, best of {args.repeats} interleaved rounds for fits and of "
        f"{args.predict_repeats} for predictions.\n"
    )
    print(
        f"| | {mlp} ({WIDTH} hidden units) | {ours} ({WIDTH} prototypes) | ratio ours / MLP | "
        f"median ratio of the interleaved rounds |"
    )
    print("|---|---|---|---|---|")

    def timed_row(label, times, scale=1.0, digits=3):
        best = {name: min(t) for name, t in times.items()}
        median = float(np.median(np.array(times[ours]) / np.array(times[mlp])))
        print(
            f"| {label} | {scale * best[mlp]:.{digits}f} | {scale * best[ours]:.{digits}f} | "
            f"**{best[ours] / best[mlp]:.2f}** | {median:.2f} |"
        )

    timed_row(f"fit, {EPOCHS} epochs, batch {BATCH}, float32 (s)", fit)
    print(
        f"| training accuracy after {EPOCHS} epochs | {accuracy[mlp]:.3f} | {accuracy[ours]:.3f} | "
        f"**{accuracy[ours] / accuracy[mlp]:.2f}** | |"
    )
    timed_row(f"predict, {N_PREDICT:,} rows, float32 (ms)", predict32, 1e3, 1)
    for label, times in [("float32", proba32), ("float64", proba64)]:
        timed_row(f"predict_proba, {N_PREDICT:,} rows, {label} (ms)", times, 1e3, 1)
    for call, label in enumerate(["first call in a process", "later calls"]):
        print(
            f"| peak extra memory of predict_proba on {N_MEMORY:,} float32 rows, {label} (MB) | "
            f"{memory[mlp][call]:.0f} | {memory[ours][call]:.0f} | {memory[ours][call] / memory[mlp][call]:.2f} | |"
        )
    print(
        f"\nThe distance GEMM alone ({N_PREDICT:,} × {N_FEATURES} by {N_FEATURES} × {WIDTH}, float32, "
        f"{gflop:.1f} GFLOP) takes {1e3 * gemm_torch:.1f} ms with torch's matmul ({gflop / gemm_torch:.0f} GFLOP/s) "
        f"and {1e3 * gemm_numpy:.1f} ms with numpy's ({gflop / gemm_numpy:.0f} GFLOP/s) here. "
        f"{ours}.predict (float32) achieves {gflop / min(predict32[ours]):.0f} GFLOP/s on it: "
        f"**{predict_to_gemm[0]:.2f} ×** the time of the faster GEMM (median of the rounds' ratios "
        f"{predict_to_gemm[1]:.2f} ×); predict_proba {gflop / min(proba32[ours]):.0f} GFLOP/s, "
        f"{proba_to_gemm[0]:.2f} × (median {proba_to_gemm[1]:.2f} ×)."
    )


if __name__ == "__main__":
    main()
