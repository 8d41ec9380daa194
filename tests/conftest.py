"""Fixtures shared by the test modules: standardised iris and a small model fitted on it."""

import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

from protoattn import IDWAttentionClassifier


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def fitted(iris):
    """Shared by a module's tests: use it read-only, or on a copy (copy.deepcopy)."""
    X, y = iris
    return IDWAttentionClassifier(n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
