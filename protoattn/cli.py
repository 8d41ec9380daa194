"""Command line: ``protoattn demo`` (also ``python -m protoattn demo``)."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def demo(args) -> int:
    """Fit on sklearn's digits, explain one prediction, patch one mistake."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from . import IDWAttentionClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    clf = IDWAttentionClassifier(random_state=args.seed).fit(X_train, y_train)
    print(f"digits: {len(X_train)} training / {len(X_test)} test images of 8x8 pixels")
    print(f"fitted {len(clf.prototypes_)} prototypes in {clf.n_iter_} epochs (power p = {clf.power_:.1f})")
    print(f"test accuracy: {clf.score(X_test, y_test):.4f}")
    labels, counts = np.unique(clf.prototype_labels_, return_counts=True)
    print("prototypes per class: " + ", ".join(f"{c}: {n}" for c, n in zip(labels, counts, strict=True)))

    explanation = clf.explain(X_test[:1], top_k=3)
    print(f"\nwhy test image 0 (true {y_test[0]}) is predicted {explanation.predicted[0]}:")
    for i, w, c in zip(
        explanation.prototype_indices[0], explanation.weights[0], explanation.contributions[0], strict=True
    ):
        print(f"  prototype {i:3d} (class {clf.prototype_labels_[i]}): weight {w:.3f}, contribution {c:+.3f}")
    print(f"  logit of class {explanation.predicted[0]} = sum over all prototypes = {explanation.logit[0]:.3f}")

    before = clf.predict(X_test)
    wrong = np.flatnonzero(before != y_test)
    if len(wrong) == 0:
        print("\nno test image is misclassified: nothing to patch")
        return 0
    i = wrong[0]
    index = clf.add_prototype(X_test[i], y_test[i])
    after = clf.predict(X_test)
    changed = np.count_nonzero(np.delete(after != before, i))
    print(f"\ntest image {i} (true {y_test[i]}) was predicted {before[i]}")
    print(f"add_prototype -> prototype {index}; now predicted {after[i]}")
    print(f"other test predictions changed: {changed} of {len(X_test) - 1}")
    print(f"test accuracy after the patch: {clf.score(X_test, y_test):.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protoattn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="fit, explain and patch on sklearn's digits")
    p.add_argument("--seed", type=int, default=0, help="random_state of the classifier (default 0)")
    p.set_defaults(run=demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
