"""Patching every mistake: what a patch fixes, and what else it changes.

On each data set (raw features, the default ``IDWAttentionClassifier()``, a stratified 30 % test split),
every misclassified test point x is patched to its true label y with ``add_prototype(x, y)`` (the
default ``radius="auto"`` and ``margin=1``) on a fresh copy of the fitted model, and we measure

- reliability: x is now predicted y;
- generality: copies of x with Gaussian noise of 1 % of each feature's training standard deviation
  (10 per patch) are predicted y too;
- locality: the share of the other test points whose prediction changed (mean and max over patches),
  whether every changed point now predicts y, and whether ``preview_patch`` listed exactly the
  changed points.

The same with ``radius=None`` (unbounded, the value row still ``η e_y``) is shown for comparison.
Prints a markdown table. Run from the repository root: ``python benchmarks/patching.py``.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import accuracy
import numpy as np
import pandas as pd
import tabular
from _machine import describe
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from protoattn import IDWAttentionClassifier


def datasets():
    """``benchmarks/accuracy.py``'s sets but the two moons (2-D: a patch's reach is seen in notebook 3),
    and a real table with d >= 20 as it comes (towny: 22 columns, two of them text, empty cells)."""
    found = {name: data for name, data in accuracy.datasets().items() if name != "moons"}
    found["towny (raw)"] = tabular.load_towny()
    return found


def patch_all(clf, X_test, y_test, noise_scale, rng, radius, copies=10):
    """Patch each misclassified test point on a fresh copy; the measures above, per patch."""
    before = clf.predict(X_test)
    rows = []
    for i in np.flatnonzero(before != y_test):
        x = X_test.iloc[i] if isinstance(X_test, pd.DataFrame) else X_test[i]
        patched = copy.deepcopy(clf)
        report = clf.preview_patch(x, y_test[i], X_test, radius=radius)
        patched.add_prototype(x, y_test[i], radius=radius)
        after = patched.predict(X_test)
        changed = np.flatnonzero(after != before)
        others = np.delete(np.arange(len(X_test)), i)
        noisy = _noisy(x, copies, noise_scale, rng)
        rows.append(
            {
                "reliable": after[i] == y_test[i],
                "general": np.mean(patched.predict(noisy) == y_test[i]),
                "others_changed": np.mean(after[others] != before[others]),
                "toward_y": bool(np.all(after[changed] == y_test[i])),
                "preview_exact": np.array_equal(report.changed, changed),
            }
        )
    return rows


def _noisy(x, copies, noise_scale, rng):
    """Copies of x with Gaussian noise on its numbers (a table's text cells and empty ones as they are)."""
    if not isinstance(x, pd.Series):
        return x + rng.normal(size=(copies, len(x))) * noise_scale
    rows = pd.DataFrame([x] * copies).reset_index(drop=True)
    for column, scale in noise_scale.items():
        rows[column] = pd.to_numeric(rows[column]) + rng.normal(size=copies) * scale
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the model and the noise")
    args = parser.parse_args(argv)
    print(f"## Patching every misclassified test point (30 % split, default model and patch)\n\n{describe()}\n")
    print(
        "| data set (n × d, classes) | patched | reliability | generality | others changed: mean | max "
        "| changed rows predict y | preview exact | unbounded (radius=None): mean | max | time (s) |"
    )
    print("|---|" + "---|" * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, (X, y) in datasets().items():
            start = time.perf_counter()
            X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=args.seed, stratify=y)
            clf = IDWAttentionClassifier(random_state=args.seed).fit(X_train, y_train)
            scale = 0.01 * (X_train.select_dtypes("number").std() if hasattr(X_train, "columns") else X_train.std(0))
            y_test = np.asarray(y_test)
            rng = np.random.default_rng(args.seed)
            bounded = patch_all(clf, X_test, y_test, scale, rng, "auto")
            unbounded = patch_all(clf, X_test, y_test, scale, rng, None)
            seconds = time.perf_counter() - start

            if not bounded:
                print(
                    f"| {name} ({X.shape[0]} × {X.shape[1]}, {len(np.unique(y))}) | 0 |"
                    + " — |" * 8
                    + f" {seconds:.1f} |"
                )
                continue

            def column(rows, key):
                return np.array([r[key] for r in rows], dtype=float)

            others, loose = column(bounded, "others_changed"), column(unbounded, "others_changed")
            print(
                f"| {name} ({X.shape[0]} × {X.shape[1]}, {len(np.unique(y))}) | {len(bounded)} "
                f"| {column(bounded, 'reliable').mean():.1%} | {column(bounded, 'general').mean():.1%} "
                f"| {others.mean():.2%} | {others.max():.2%} "
                f"| {'yes' if column(bounded, 'toward_y').all() else 'no'} "
                f"| {'yes' if column(bounded, 'preview_exact').all() else 'no'} "
                f"| {loose.mean():.2%} | {loose.max():.2%} | {seconds:.1f} |"
            )


if __name__ == "__main__":
    main()
