"""What the CPU fast path for Shepard weights (protoattn/_fast.py) buys over the one definition.

The same default estimator on the problem of ``benchmarks/speed.py`` (50 000 × 100 training rows, 10
classes, 100 prototypes, batch 256, 5 epochs; predictions on 200 000 rows), once as shipped and once
with the fast path switched off, so that training runs autograd through ``softmax(idw(x, K)) @ V``
with ``torch.optim.Adam`` and prediction the torch network. Interleaved rounds; prints a markdown
table. Run from the repository root: ``python benchmarks/fast_path.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings

import numpy as np
from _machine import describe
from sklearn.exceptions import ConvergenceWarning
from speed import BATCH, EPOCHS, WIDTH, problem

from protoattn import IDWAttentionClassifier, _fast
from protoattn._network import PrototypeAttention


@contextlib.contextmanager
def definition_only():
    """Prediction and training through the torch network alone."""
    predictor, shepard = _fast.predictor, PrototypeAttention.shepard
    _fast.predictor = lambda network: None
    PrototypeAttention.shepard = property(lambda self: False)
    try:
        yield
    finally:
        _fast.predictor, PrototypeAttention.shepard = predictor, shepard


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    X, y, X_new = problem()
    X_new64 = X_new.astype(np.float64)
    model = IDWAttentionClassifier(n_prototypes=WIDTH, batch_size=BATCH, max_epochs=EPOCHS, random_state=0)
    calls = {
        f"fit, {EPOCHS} epochs (s)": lambda: model.fit(X, y),
        "predict_proba, float32 (ms)": lambda: model.predict_proba(X_new),
        "predict_proba, float64 (ms)": lambda: model.predict_proba(X_new64),
    }
    times = {(name, path): [] for name in calls for path in ("fast", "definition")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
        for round_ in range(args.rounds):
            for name, call in calls.items():
                for path in ("fast", "definition")[:: 1 if round_ % 2 == 0 else -1]:
                    with definition_only() if path == "definition" else contextlib.nullcontext():
                        times[name, path].append(timed(call))
    print("## The fast path against the one definition\n")
    print(f"{describe()}. Best of {args.rounds} interleaved rounds.\n")
    print("| | definition (torch, autograd) | fast path (numpy) | fast / definition | median ratio of the rounds |")
    print("|---|---|---|---|---|")
    for name in calls:
        fast, definition = np.array(times[name, "fast"]), np.array(times[name, "definition"])
        scale = 1.0 if name.endswith("(s)") else 1e3
        print(
            f"| {name} | {scale * definition.min():.3g} | {scale * fast.min():.3g} | "
            f"**{fast.min() / definition.min():.2f}** | {np.median(fast / definition):.2f} |"
        )


if __name__ == "__main__":
    main()
