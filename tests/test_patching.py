"""Patches with a certified reach: add_prototype changes nothing beyond its radius and moves
predictions only toward its label; preview_patch lists exactly what it changes; the reach and the log
of patches are part of the model (save/load, remove_prototypes, warm and partial fits, ONNX)."""

import copy
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from protoattn import IDWAttentionClassifier, PatchReport
from protoattn.attention import BOUNDED_ATTENTIONS


def _split(loader):
    X, y = loader(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


def _iris_sepals(return_X_y=True):
    """Iris by its sepals alone, where versicolor and virginica overlap: a model with mistakes to patch
    (on all four features the default model makes none on the held-out rows)."""
    X, y = load_iris(return_X_y=return_X_y)
    return X[:, :2], y


@pytest.fixture(scope="module", params=[_iris_sepals, load_breast_cancer], ids=["iris", "breast_cancer"])
def problem(request):
    X_train, X_test, y_train, y_test = _split(request.param)
    clf = IDWAttentionClassifier(random_state=0).fit(X_train, y_train)
    return clf, X_test, y_test


def test_preview_lists_exactly_the_rows_a_patch_changes(problem):
    clf, X, y = problem
    before = clf.predict(X)
    wrong = np.flatnonzero(before != y)
    assert len(wrong) > 0
    for i in wrong:
        report = clf.preview_patch(X[i], y[i], X)
        patched = copy.deepcopy(clf)
        patched.add_prototype(X[i], y[i])
        after = patched.predict(X)
        changed = np.flatnonzero(after != before)
        np.testing.assert_array_equal(report.changed, changed)
        np.testing.assert_array_equal(report.before, before[changed])
        np.testing.assert_array_equal(report.after, after[changed])
        assert after[i] == y[i] and i in changed  # reliability
        assert np.all(after[changed] == y[i])  # only toward y
        assert np.all(report.distances[changed] <= report.radius)
        assert patched.prototype_reach_[-1] == report.radius
        # Beyond the radius the new prototype's weight is exactly 0, so nothing changes: the logits
        # are the same up to the rounding of sums over one more (zero) term.
        outside = report.distances > report.radius
        assert np.all(patched.attention_weights(X[outside])[:, -1] == 0.0)
        np.testing.assert_allclose(
            patched.decision_function(X[outside]), clf.decision_function(X[outside]), rtol=1e-12, atol=1e-12
        )


def test_report_is_a_frozen_table(problem):
    clf, X, y = problem
    i = int(np.flatnonzero(clf.predict(X) != y)[0])
    report = clf.preview_patch(X[i], y[i], X)
    assert isinstance(report, PatchReport) and report.label == y[i]
    with pytest.raises(AttributeError):
        report.radius = 1.0
    frame = report.to_frame()
    assert list(frame.columns) == ["row", "before", "after", "distance"] and i in frame["row"].tolist()
    assert frame["distance"].is_monotonic_increasing
    assert len(report.distances) == len(X) and report.distances[i] < 1e-6


def test_auto_radius_is_half_the_distance_to_another_class():
    X, y = load_iris(return_X_y=True)
    clf = IDWAttentionClassifier(n_prototypes=6, random_state=0).fit(X, y)
    x = X[70]
    squared = clf._squared_distances(clf._encoded(x[None]))[0]
    expected = 0.5 * np.sqrt(squared[clf.prototype_labels_ != 0]).min()
    assert clf.preview_patch(x, 0, X).radius == pytest.approx(expected)
    # The distance is the one Explanation.feature_terms decomposes.
    terms = clf.explain(x[None], top_k=6).feature_terms[0].sum(1)
    order = clf.explain(x[None], top_k=6).prototype_indices[0]
    np.testing.assert_allclose(terms, squared[order], rtol=1e-9)


def test_radius_none_is_unbounded_and_a_number_is_the_reach():
    X, y = load_iris(return_X_y=True)
    clf = IDWAttentionClassifier(n_prototypes=6, random_state=0).fit(X, y)
    unbounded = copy.deepcopy(clf)
    unbounded.add_prototype(X[70], 0, radius=None)
    assert unbounded.prototype_reach_[-1] == np.inf and unbounded.patches_["radius"][-1] == np.inf
    report = clf.preview_patch(X[70], 0, X, radius=0.3)
    assert report.radius == 0.3
    clf.add_prototype(X[70], 0, radius=0.3)
    assert clf.prototype_reach_[-1] == 0.3
    for bad in (0, -1.0, np.nan, "near", True):
        with pytest.raises(ValueError, match="radius must be"):
            clf.add_prototype(X[70], 0, radius=bad)


@pytest.mark.parametrize("attention", ["dot", "cosine", "expressive", "relu"])
def test_scores_without_a_distance_refuse_a_radius_and_auto_means_none(attention):
    X, y = load_iris(return_X_y=True)
    clf = IDWAttentionClassifier(attention=attention, n_prototypes=6, max_epochs=20, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="needs a score built on distances"):
        clf.add_prototype(X[0], 2, radius=1.0)
    try:
        clf.add_prototype(X[0], 2)  # "auto": unbounded
    except ValueError as error:  # a product score may give x's new prototype too little weight
        assert "Cannot patch" in str(error)
    else:
        assert clf.prototype_reach_[-1] == np.inf


@pytest.mark.parametrize("attention", sorted(BOUNDED_ATTENTIONS))
def test_every_distance_score_keeps_the_bound(attention):
    X_train, X, y_train, y = _split(load_wine)
    clf = IDWAttentionClassifier(attention=attention, max_epochs=40, random_state=0).fit(X_train, y_train)
    before = clf.predict(X)
    x, target = X[0], clf.classes_[(np.searchsorted(clf.classes_, before[0]) + 1) % 3]
    report = clf.preview_patch(x, target, X)
    clf.add_prototype(x, target)
    after = clf.predict(X)
    assert after[0] == target
    np.testing.assert_array_equal(np.flatnonzero(after != before), report.changed)
    assert np.all(after[report.changed] == target)
    assert np.all(report.distances[report.changed] <= report.radius)


def test_several_patches_keep_their_bounds_and_their_log():
    X_train, X, y_train, y = _split(load_breast_cancer)
    clf = IDWAttentionClassifier(random_state=0).fit(X_train, y_train)
    radii = []
    for i in np.flatnonzero(clf.predict(X) != y)[:4]:
        report = clf.preview_patch(X[i], y[i], X)
        before = clf.decision_function(X)
        clf.add_prototype(X[i], y[i])
        outside = report.distances > report.radius
        np.testing.assert_allclose(clf.decision_function(X)[outside], before[outside], rtol=1e-12, atol=1e-12)
        radii.append(report.radius)
    log = clf.patches_
    m = len(clf.prototypes_)
    np.testing.assert_array_equal(log["index"], np.arange(m - len(radii), m))
    np.testing.assert_array_equal(log["radius"], radii)
    np.testing.assert_array_equal(clf.prototype_reach_[-len(radii) :], radii)
    assert np.all(np.isinf(clf.prototype_reach_[: -len(radii)]))
    # remove_prototypes forgets the removed patch and renumbers the others.
    clf.remove_prototypes([0, m - 2])
    np.testing.assert_array_equal(clf.patches_["index"], [m - 5, m - 4, m - 3])
    np.testing.assert_array_equal(clf.patches_["radius"], [radii[0], radii[1], radii[3]])
    assert len(clf.prototype_reach_) == m - 2
    # Replacing a patch logs the new one in its place.
    clf.add_prototype(X[0], y[0], replace=m - 5, radius=0.5)
    assert clf.patches_["index"].tolist() == [m - 4, m - 3, m - 5]
    assert clf.patches_["replaced"].tolist() == [False, False, True]


def test_some_prototype_keeps_an_infinite_reach():
    X, y = load_iris(return_X_y=True)
    clf = IDWAttentionClassifier(n_prototypes=3, max_epochs=20, random_state=0).fit(X, y)
    clf.add_prototype(X[70], 0, radius=0.5)
    clf.remove_prototypes([0, 1])
    with pytest.raises(ValueError, match="last prototype of infinite reach"):
        clf.add_prototype(X[0], 0, replace=0, radius=0.5)
    with pytest.raises(ValueError, match="every prototype of infinite reach"):
        clf.remove_prototypes([0])


def test_reach_and_log_survive_save_load_and_are_validated(tmp_path):
    X, y = load_iris(return_X_y=True)
    y = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = IDWAttentionClassifier(n_prototypes=6, random_state=0).fit(X, y)
    clf.add_prototype(X[70], "setosa")
    path = tmp_path / "model.protoattn"
    clf.save(path)
    same = IDWAttentionClassifier.load(path)
    np.testing.assert_array_equal(same.prototype_reach_, clf.prototype_reach_)
    for name in clf.patches_:
        np.testing.assert_array_equal(same.patches_[name], clf.patches_[name])
    np.testing.assert_array_equal(same.decision_function(X), clf.decision_function(X))
    for bad, message in [
        (-np.ones(7), "non-negative"),
        (np.ones(7), "at least one inf"),
        (np.full(6, np.inf), "shape"),
    ]:
        broken = copy.deepcopy(clf)
        broken.prototype_reach_ = bad
        broken.save(path)
        with pytest.raises(ValueError, match=message):
            IDWAttentionClassifier.load(path)
    broken = copy.deepcopy(clf)
    broken.patches_ = dict(clf.patches_, index=np.array([9]))
    broken.save(path)
    with pytest.raises(ValueError, match="patches_"):
        IDWAttentionClassifier.load(path)


def test_a_file_without_reaches_loads_unbounded(tmp_path):
    X, y = load_iris(return_X_y=True)
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=20, random_state=0).fit(X, y)
    del clf.prototype_reach_, clf.patches_
    clf.save(tmp_path / "old.protoattn")
    same = IDWAttentionClassifier.load(tmp_path / "old.protoattn")
    assert np.all(np.isinf(same.prototype_reach_)) and len(same.patches_["index"]) == 0


def test_warm_and_partial_fits_keep_a_patch_reach():
    X, y = load_iris(return_X_y=True)
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=10, warm_start=True, random_state=0).fit(X, y)
    clf.add_prototype(X[70], 0, radius=0.4)
    clf.fit(X, y)
    assert clf.prototype_reach_.tolist() == [np.inf] * 6 + [0.4]
    clf.partial_fit(X, y)
    assert clf.prototype_reach_.tolist() == [np.inf] * 6 + [0.4]
    assert np.all(np.isfinite(clf.predict_proba(X)))
    # The reach is honoured in training too: beyond it the patch's weight is 0.
    far = clf._squared_distances(clf._encoded(X))[:, -1] > 0.4**2
    assert np.all(clf.attention_weights(X)[far, -1] == 0.0)
    clf.set_params(warm_start=False).fit(X, y)
    assert clf.prototype_reach_.tolist() == [np.inf] * 6 and len(clf.patches_["index"]) == 0


def test_onnx_export_honours_the_reach(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from protoattn.export import export_onnx

    X, y = load_iris(return_X_y=True)
    clf = IDWAttentionClassifier(n_prototypes=6, random_state=0).fit(X, y)
    clf.add_prototype(X[70], 0, radius=0.5)
    path = export_onnx(clf, tmp_path / "model.onnx", dtype="float64")
    (logits,) = ort.InferenceSession(str(path)).run(["logits"], {"X": X})
    np.testing.assert_allclose(logits, clf.decision_function(X), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**16),
    n_features=st.integers(1, 5),
    n_classes=st.integers(2, 4),
    attention=st.sampled_from(sorted(BOUNDED_ATTENTIONS - {"kernel"})),
    radius=st.sampled_from(["auto", 0.1, 0.5, 2.0]),
    margin=st.floats(0.1, 5.0),
)
def test_no_point_outside_the_radius_changes(seed, n_features, n_classes, attention, radius, margin):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(12 * n_classes, n_features)) * rng.uniform(0.1, 10, n_features)
    y = np.repeat(np.arange(n_classes), 12)
    X += y[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = IDWAttentionClassifier(attention=attention, n_prototypes=2 * n_classes, max_epochs=5, random_state=0)
        clf.fit(X, y)
    Q = np.vstack([X, rng.normal(size=(200, n_features)) * X.std(0) * 2 + X.mean(0)])
    x = Q[rng.integers(len(Q))] + rng.normal(size=n_features) * 0.1
    target = int(rng.integers(n_classes))
    before_logits, before = clf.decision_function(Q), clf.predict(Q)
    try:
        report = clf.preview_patch(x, target, Q, margin=margin, radius=radius)
        clf.add_prototype(x, target, margin=margin, radius=radius)
    except ValueError as error:  # x on another class's prototype, or a weight too small at x
        assert "Cannot" in str(error)
        return
    after = clf.predict(Q)
    assert clf.predict(x[None])[0] == target
    outside = report.distances > report.radius
    np.testing.assert_array_equal(after[outside], before[outside])
    assert np.all(clf.attention_weights(Q)[outside, -1] == 0.0)
    np.testing.assert_allclose(clf.decision_function(Q)[outside], before_logits[outside], rtol=1e-12, atol=1e-12)
    moved = after != before
    assert np.all(after[moved] == target)
    np.testing.assert_array_equal(np.flatnonzero(moved), report.changed)
