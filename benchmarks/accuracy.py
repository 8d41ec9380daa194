"""Accuracy of IDWAttentionClassifier() against the usual alternatives, everyone at default settings.

5-fold stratified cross-validation (shuffled, fixed seed) of ``make_pipeline(StandardScaler(), estimator)``
on small public data sets; prints a markdown table of mean accuracy per data set, the mean over data
sets, and the ratio of ours to the best baseline's mean. prosemble's GMLVQ joins when that package is
installed. Run from the repository root: ``python benchmarks/accuracy.py``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _machine import describe
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine, make_classification, make_moons
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from protoattn import IDWAttentionClassifier

OURS = "IDWAttention"


def datasets():
    """Name -> (X, y). Two moons as in the IDW attention paper: 100 points per moon, noise 0.1."""
    return {
        "iris": load_iris(return_X_y=True),
        "wine": load_wine(return_X_y=True),
        "breast_cancer": load_breast_cancer(return_X_y=True),
        "digits": load_digits(return_X_y=True),
        "moons": make_moons(n_samples=(100, 100), noise=0.1, random_state=0),
        "classification_20d_4c": make_classification(
            n_samples=1000, n_features=20, n_informative=10, n_classes=4, random_state=0
        ),
    }


def estimators(seed):
    found = {
        OURS: IDWAttentionClassifier(random_state=seed),
        "MLP": MLPClassifier(max_iter=500, random_state=seed),
        "kNN": KNeighborsClassifier(),
        "LogReg": LogisticRegression(max_iter=3000),
        "NearestCentroid": NearestCentroid(),
    }
    try:
        from prosemble.models import GMLVQ
    except ImportError:
        pass
    else:
        found["GMLVQ (prosemble)"] = GMLVQ()
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and of the seeded estimators")
    parser.add_argument("--n-jobs", type=int, default=1, help="folds fitted in parallel")
    args = parser.parse_args(argv)
    print(f"## Accuracy: 5-fold stratified CV, StandardScaler + default hyperparameters\n\n{describe()}\n")
    models = estimators(args.seed)
    data = datasets()
    folds = StratifiedKFold(5, shuffle=True, random_state=args.seed)
    scores = {name: {} for name in models}
    seconds = {name: 0.0 for name in models}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "self.within_class_std_dev_", UserWarning)  # NearestCentroid on digits
        for set_name, (X, y) in data.items():
            for name, model in models.items():
                start = time.perf_counter()
                result = cross_validate(make_pipeline(StandardScaler(), model), X, y, cv=folds, n_jobs=args.n_jobs)
                seconds[name] += time.perf_counter() - start
                scores[name][set_name] = result["test_score"]
    names = list(models)
    print("| data set (n × d, classes) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for set_name, (X, y) in data.items():
        best = max(scores[name][set_name].mean() for name in names)
        cells = []
        for name in names:
            s = scores[name][set_name]
            cell = f"{s.mean():.3f} ± {s.std():.3f}"
            cells.append(f"**{cell}**" if s.mean() == best else cell)
        print(f"| {set_name} ({X.shape[0]} × {X.shape[1]}, {len(np.unique(y))}) | " + " | ".join(cells) + " |")
    means = {name: np.mean([s.mean() for s in scores[name].values()]) for name in names}
    print("| **mean** | " + " | ".join(f"{means[name]:.4f}" for name in names) + " |")
    print("| total time (s) | " + " | ".join(f"{seconds[name]:.1f}" for name in names) + " |")
    best_baseline = max((name for name in names if name != OURS), key=means.get)
    print(f"\nMean accuracy of {OURS} / best baseline ({best_baseline}): **{means[OURS] / means[best_baseline]:.4f}**.")


if __name__ == "__main__":
    main()
