"""Peak extra memory of prediction: 1 000 000 x 100 rows, 100 prototypes, 10 classes.

Each call is measured in a fresh Python process that loads a saved model, builds X, warms up on
20 000 rows, reads its resident set size (RSS), makes the call once, and reads the peak RSS from
``resource.getrusage`` (which, unlike tracemalloc, sees torch's allocations). "Extra" is that peak
minus the RSS just before the call: the memory the call needs on top of X and the model. If an
earlier moment of the process (imports, building X) peaked higher, the number is an upper bound.
The output of ``attention_weights`` is n x m float64 by definition; its size is listed apart.

Run from the repository root (Linux; a few minutes, up to about 3.5 GB of memory)::

    .venv/bin/python benchmarks/memory.py [--rows 1000000] [--calls predict ...] [--dtypes float64 ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile

import numpy as np

N_FEATURES, N_PROTOTYPES, N_CLASSES = 100, 100, 10
CALLS = {
    "predict": lambda clf, X: clf.predict(X),
    "predict_proba": lambda clf, X: clf.predict_proba(X),
    "decision_function": lambda clf, X: clf.decision_function(X),
    "explain(top_k=3)": lambda clf, X: clf.explain(X, top_k=3),
    "attention_weights": lambda clf, X: clf.attention_weights(X),
}
MB = 2**20


def _rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def measure(model, call, rows, dtype):
    """In this (fresh) process: RSS before, peak RSS after, and the output's size, in bytes."""
    from protoattn import IDWAttentionClassifier

    clf = IDWAttentionClassifier.load(model)
    X = np.random.default_rng(0).standard_normal((rows, N_FEATURES), dtype=np.dtype(dtype))
    CALLS[call](clf, X[:20_000])
    before = _rss_bytes()
    out = CALLS[call](clf, X)
    output = out.nbytes if isinstance(out, np.ndarray) else sum(v.nbytes for v in vars(out).values())
    return before, _peak_rss_bytes(), output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", nargs="+", choices=list(CALLS), default=list(CALLS), metavar="CALL")
    parser.add_argument("--dtypes", nargs="+", choices=["float64", "float32"], default=["float64", "float32"])
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "CALL", "ROWS", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, call, rows, dtype = args.child
        print(*measure(model, call, int(rows), dtype))
        return

    from sklearn.datasets import make_classification

    from protoattn import IDWAttentionClassifier

    X, y = make_classification(20_000, n_features=N_FEATURES, n_informative=20, n_classes=N_CLASSES, random_state=0)
    clf = IDWAttentionClassifier(n_prototypes=N_PROTOTYPES, max_epochs=1, random_state=0).fit(X, y)
    print(f"{args.rows:,} x {N_FEATURES} rows, {len(clf.prototypes_)} prototypes, {N_CLASSES} classes (MB = 2^20 B)\n")
    print("| call | X dtype | X (MB) | RSS before (MB) | peak RSS (MB) | extra (MB) | output (MB) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model.protoattn")
        clf.save(model)
        for dtype in args.dtypes:
            for call in args.calls:
                child = [sys.executable, __file__, "--child", model, call, str(args.rows), dtype]
                before, peak, output = map(int, subprocess.check_output(child, text=True).split())
                x_mb = args.rows * N_FEATURES * np.dtype(dtype).itemsize / MB
                print(
                    f"| {call} | {dtype} | {x_mb:.0f} | {before / MB:.0f} | {peak / MB:.0f} | "
                    f"{(peak - before) / MB:.0f} | {output / MB:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
