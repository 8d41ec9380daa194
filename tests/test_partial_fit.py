"""Training in several calls: partial_fit on a stream of chunks, and warm_start."""

import io

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from protoattn import IDWAttentionClassifier


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(StandardScaler().fit_transform(X), y, test_size=0.25, random_state=0, stratify=y)


def _chunks(X, y, size):
    return [(X[i : i + size], y[i : i + size]) for i in range(0, len(X), size)]


def test_stream_of_chunks_reaches_the_accuracy_of_fit(digits):
    X_train, X_test, y_train, y_test = digits
    fitted = IDWAttentionClassifier(random_state=0).fit(X_train, y_train)
    streamed = IDWAttentionClassifier(random_state=0)
    chunks = _chunks(X_train, y_train, 300)
    for _ in range(3):
        for X, y in chunks:
            streamed.partial_fit(X, y, classes=np.arange(10))
    assert streamed.n_iter_ == len(streamed.loss_curve_) == 3 * len(chunks)
    assert streamed.prototypes_.shape == (100, 64)
    # Three passes at a constant rate come within 2.5 points of a full fit (0.967 against 0.989 here).
    assert streamed.score(X_test, y_test) >= fitted.score(X_test, y_test) - 0.025


def test_one_pass_over_the_chunks_already_classifies(digits):
    X_train, X_test, y_train, y_test = digits
    clf = IDWAttentionClassifier(random_state=0)
    for X, y in _chunks(X_train, y_train, 300):
        clf.partial_fit(X, y, classes=np.arange(10))
    assert clf.score(X_test, y_test) > 0.9


def test_class_missing_from_the_first_call_is_learnt_later(iris):
    X, y = iris
    order = np.argsort(y == 2, kind="stable")  # every row of class 2 comes last
    X, y = X[order], y[order]
    clf = IDWAttentionClassifier(n_prototypes=6, random_state=0)
    clf.partial_fit(X[:50], y[:50], classes=[0, 1, 2])
    assert clf.predict_proba(X[:5]).shape == (5, 3)
    assert set(clf.prototype_labels_) == {0}
    for _ in range(10):
        for Xc, yc in _chunks(X, y, 50):
            clf.partial_fit(Xc, yc)
    assert clf.prototypes_.shape == (6, 4)
    np.testing.assert_array_equal(np.bincount(clf.prototype_labels_), [2, 2, 2])
    assert np.mean(clf.predict(X[y == 2]) == 2) > 0.85
    assert clf.score(X, y) > 0.9


def test_small_first_calls_place_prototypes_as_rows_arrive(iris):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, random_state=0)
    rows = np.random.RandomState(0).permutation(len(X))
    for i in rows[:40]:
        clf.partial_fit(X[i : i + 1], y[i : i + 1], classes=[0, 1, 2])
    assert clf.prototypes_.shape == (6, 4)
    assert clf.n_iter_ == 40
    assert np.all(np.isfinite(clf.prototypes_))


def _vars_hold_no_tensor(value):
    if isinstance(value, dict):
        return all(_vars_hold_no_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_vars_hold_no_tensor(v) for v in value)
    return not isinstance(value, torch.Tensor | torch.nn.Module)


def test_state_between_calls_is_numpy_and_survives_pickling(digits):
    X_train, X_test, y_train, _ = digits
    chunks = _chunks(X_train, y_train, 300)
    clf = IDWAttentionClassifier(random_state=0)
    for X, y in chunks[:2]:
        clf.partial_fit(X, y, classes=np.arange(10))
    assert _vars_hold_no_tensor(vars(clf))
    buffer = io.BytesIO()
    joblib.dump(clf, buffer)
    buffer.seek(0)
    copy = joblib.load(buffer)
    for model in (clf, copy):
        for X, y in chunks[2:]:
            model.partial_fit(X, y)
    np.testing.assert_array_equal(copy.prototypes_, clf.prototypes_)
    np.testing.assert_array_equal(copy.predict_proba(X_test), clf.predict_proba(X_test))


def test_equal_seeds_give_equal_streams(iris):
    X, y = iris
    models = [IDWAttentionClassifier(n_prototypes=6, random_state=3) for _ in range(2)]
    for model in models:
        for Xc, yc in _chunks(X, y, 40):
            model.partial_fit(Xc, yc, classes=[0, 1, 2])
    np.testing.assert_array_equal(models[0].prototypes_, models[1].prototypes_)


def test_partial_fit_continues_a_fitted_model(iris):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=30, random_state=0).fit(X, y)
    before, n_iter = clf.prototypes_.copy(), clf.n_iter_
    clf.partial_fit(X, y)
    assert clf.n_iter_ == n_iter + 1 and len(clf.loss_curve_) == n_iter + 1
    assert clf.prototypes_.shape == before.shape and not np.array_equal(clf.prototypes_, before)
    assert clf.score(X, y) > 0.9


def test_partial_fit_continues_a_model_loaded_from_a_file(iris, tmp_path):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=30, random_state=0).fit(X, y)
    clf.save(tmp_path / "model.protoattn")
    loaded = IDWAttentionClassifier.load(tmp_path / "model.protoattn")
    loaded.partial_fit(X, y)
    assert loaded.n_iter_ == clf.n_iter_ + 1 and loaded.prototypes_.shape == clf.prototypes_.shape
    assert loaded.score(X, y) > 0.9


def test_partial_fit_with_random_init(iris):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, init="random", random_state=0)
    for _ in range(20):
        for Xc, yc in _chunks(X, y, 50):
            clf.partial_fit(Xc, yc, classes=[0, 1, 2])
    assert clf.prototypes_.shape == (6, 4)
    assert clf.score(X, y) > 0.85


def test_bad_calls_raise_and_change_nothing(iris):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    with pytest.raises(ValueError, match=r"labels \[2\] that are not in classes"):
        clf.partial_fit(X, y, classes=[0, 1])
    assert not hasattr(clf, "classes_")
    clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    state = {name: np.copy(getattr(clf, name)) for name in ("prototypes_", "logits_", "classes_")}
    with pytest.raises(ValueError, match="classes cannot change"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X[:5], [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :3], y)
    with pytest.raises(ValueError, match="balanced"):
        clf.set_params(class_weight="balanced").partial_fit(X, y)
    for name, value in state.items():
        np.testing.assert_array_equal(getattr(clf, name), value)
    assert clf.n_iter_ == 1


def test_partial_fit_with_a_class_weight_dict(iris):
    X, y = iris
    heavy = IDWAttentionClassifier(n_prototypes=6, class_weight={0: 1.0, 1: 1.0, 2: 50.0}, random_state=0)
    plain = IDWAttentionClassifier(n_prototypes=6, random_state=0)
    for model in (heavy, plain):
        for _ in range(5):
            model.partial_fit(X, y, classes=[0, 1, 2])
    # Weighting class 2 up moves the 1/2 boundary towards class 1: more rows are called 2.
    assert np.sum(heavy.predict(X) == 2) > np.sum(plain.predict(X) == 2)


def test_warm_start_continues_from_the_current_model(iris):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=30, random_state=0).fit(X, y)
    clf.add_prototype(X[0], 1)
    trained, patched = clf.prototypes_.copy(), clf.patched_prototypes_.copy()
    # With a vanishing learning rate, a warm fit keeps the model it starts from, patch included ...
    clf.set_params(warm_start=True, learning_rate=1e-12, max_epochs=2).fit(X, y)
    np.testing.assert_allclose(clf.prototypes_, trained, atol=1e-6)
    np.testing.assert_array_equal(clf.patched_prototypes_, patched)
    # ... while a cold fit starts again from k-means.
    cold = clf.set_params(warm_start=False).fit(X, y)
    assert cold.prototypes_.shape == (6, 4)


def test_warm_start_starts_over_when_the_data_change(iris):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=5, warm_start=True, random_state=0).fit(X, y)
    clf.add_prototype(X[0], 1)
    clf.fit(X[y < 2], y[y < 2])
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    assert clf.prototypes_.shape == (6, 4) and clf.logits_.shape == (6, 2)
    assert not clf.patched_prototypes_.any()
    clf.fit(X[:, :3], y)
    assert clf.prototypes_.shape == (6, 3)
