"""What users of IDWAttentionClassifier rely on: decomposition, explanations, patches, persistence."""

import io

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris, make_classification, make_moons
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from protoattn import ATTENTIONS, IDWAttentionClassifier


@pytest.fixture(scope="module")
def fitted(iris):
    X, y = iris
    return IDWAttentionClassifier(n_prototypes=9, max_epochs=30, random_state=0).fit(X, y)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_fitted_model_is_readable_numpy(fitted, iris):
    X, y = iris
    assert isinstance(fitted.prototypes_, np.ndarray) and fitted.prototypes_.shape == (9, 4)
    assert isinstance(fitted.logits_, np.ndarray) and fitted.logits_.shape == (9, 3)
    np.testing.assert_array_equal(fitted.prototype_labels_, fitted.classes_[fitted.logits_.argmax(1)])
    assert fitted.score(X, y) > 0.9
    assert fitted.n_iter_ == len(fitted.loss_curve_) >= 1


def test_predictions_decompose_into_prototype_contributions(fitted, iris):
    X, _ = iris
    weights = fitted.attention_weights(X)
    assert weights.shape == (len(X), len(fitted.prototypes_))
    np.testing.assert_allclose(weights.sum(1), 1.0)
    np.testing.assert_allclose(_softmax(weights @ fitted.logits_), fitted.predict_proba(X), atol=1e-12)
    np.testing.assert_allclose(fitted.predict_proba(X).sum(1), 1.0)
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(X)), fitted.predict_proba(X), atol=1e-12)
    np.testing.assert_array_equal(fitted.predict(X), fitted.classes_[fitted.predict_proba(X).argmax(1)])


def test_binary_decision_function_is_one_column():
    X, y = make_moons(100, noise=0.1, random_state=0)
    clf = IDWAttentionClassifier(max_epochs=20, random_state=0).fit(X, y)
    d = clf.decision_function(X)
    assert d.shape == (100,)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(d > 0).astype(int)])


def test_explain_contributions_sum_to_the_logit(fitted, iris):
    X, _ = iris
    e = fitted.explain(X[:20], top_k=3)
    assert e.prototype_indices.shape == e.weights.shape == e.contributions.shape == (20, 3)
    np.testing.assert_array_equal(e.predicted, fitted.predict(X[:20]))
    logits = fitted.attention_weights(X[:20]) @ fitted.logits_
    np.testing.assert_allclose(e.logit, logits.max(1))
    full = fitted.explain(X[:20], top_k=len(fitted.prototypes_))
    np.testing.assert_allclose(full.contributions.sum(1), e.logit)
    assert np.all(np.diff(full.contributions, axis=1) <= 0)  # largest contribution first
    np.testing.assert_array_equal(e.prototype_labels, fitted.prototype_labels_[e.prototype_indices])
    frame = e.to_frame()
    assert len(frame) == 60 and {"sample", "rank", "prototype", "weight", "contribution"} <= set(frame.columns)


@pytest.mark.parametrize("attention", sorted(ATTENTIONS))
def test_add_prototype_flips_its_point_for_every_attention(attention, iris):
    X, y = iris
    clf = IDWAttentionClassifier(attention=attention, n_prototypes=6, max_epochs=20, random_state=0).fit(X, y)
    x = X[0]  # a setosa; patch it to the class the model least expects there
    target = clf.classes_[clf.predict_proba([x])[0].argmin()]
    m = len(clf.prototypes_)
    index = clf.add_prototype(x, target, margin=1.0)
    assert index == m and len(clf.prototypes_) == m + 1
    np.testing.assert_array_equal(clf.prototypes_[index], x)
    assert clf.predict([x])[0] == target
    logits = np.atleast_2d(clf.decision_function([x]))
    if logits.shape[1] > 1:
        assert np.sort(logits[0])[-1] - np.sort(logits[0])[-2] >= 1.0 - 1e-9
    assert clf.prototype_labels_[index] == target
    assert clf.patched_prototypes_.tolist() == [False] * m + [True]


def test_idw_patch_leaves_far_predictions_alone():
    X, y = make_moons(400, noise=0.1, random_state=0)
    clf = IDWAttentionClassifier(n_prototypes=16, random_state=0).fit(X, y)
    far = X[np.linalg.norm(X - [0.5, 0.25], axis=1) > 1.0]
    before = clf.predict_proba(far)
    clf.add_prototype([0.5, 0.25], 1 - clf.predict([[0.5, 0.25]])[0])
    assert np.mean(clf.predict(far) != before.argmax(1)) <= 0.01
    assert np.abs(clf.predict_proba(far) - before).max() < 0.1


def test_add_prototype_replace_overwrites_in_place(fitted, iris):
    X, _ = iris
    clf = joblib.load(_roundtrip(fitted))
    m = len(clf.prototypes_)
    x, label = X[60], clf.classes_[0]
    assert clf.add_prototype(x, label, replace=2) == 2
    assert len(clf.prototypes_) == m
    np.testing.assert_array_equal(clf.prototypes_[2], x)
    assert clf.predict([x])[0] == label
    assert clf.patched_prototypes_[2] and clf.patched_prototypes_.sum() == 1


def test_remove_prototypes(fitted):
    clf = joblib.load(_roundtrip(fitted))
    kept = np.delete(clf.prototypes_, [0, 3], axis=0)
    assert clf.remove_prototypes([0, 3]) is clf
    np.testing.assert_array_equal(clf.prototypes_, kept)
    assert clf.logits_.shape == (len(kept), 3) and len(clf.patched_prototypes_) == len(kept)


def _state(clf, X):
    return clf.prototypes_.copy(), clf.logits_.copy(), clf.predict_proba(X)


def _assert_same_state(state, clf, X):
    for a, b in zip(state, _state(clf, X), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "args, kwargs, error",
    [
        (([1.0, 2.0, 3.0], 0), {}, ValueError),  # wrong length
        (([np.nan] * 4, 0), {}, ValueError),  # no observed feature
        (([np.inf, 0, 0, 0], 0), {}, ValueError),
        (([0.0, 0, 0, 0], "cat"), {}, ValueError),  # unknown label
        (([0.0, 0, 0, 0], 7), {}, ValueError),
        (([0.0, 0, 0, 0], [0, 1]), {}, ValueError),
        ((np.zeros((2, 4)), 0), {}, ValueError),  # two samples
        (([0.0, 0, 0, 0], 0), {"margin": 0.0}, ValueError),
        (([0.0, 0, 0, 0], 0), {"margin": np.nan}, ValueError),
        (([0.0, 0, 0, 0], 0), {"replace": 99}, ValueError),
        (([0.0, 0, 0, 0], 0), {"replace": -1}, ValueError),
        (([0.0, 0, 0, 0], 0), {"replace": 1.5}, ValueError),
    ],
)
def test_bad_add_prototype_changes_nothing(fitted, iris, args, kwargs, error):
    X, _ = iris
    before = _state(fitted, X)
    with pytest.raises(error):
        fitted.add_prototype(*args, **kwargs)
    _assert_same_state(before, fitted, X)


@pytest.mark.parametrize(
    "indices, error",
    [
        ([99], ValueError),
        ([0, 0], ValueError),
        ([-1], ValueError),
        (list(range(9)), ValueError),
        ([0.5], TypeError),
        ("a", TypeError),
    ],
)
def test_bad_remove_prototypes_changes_nothing(fitted, iris, indices, error):
    X, _ = iris
    before = _state(fitted, X)
    with pytest.raises(error):
        fitted.remove_prototypes(indices)
    _assert_same_state(before, fitted, X)


def test_failed_refit_changes_nothing(iris):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=5, random_state=0).fit(X, y)
    before = _state(clf, X)
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(X[:, :2], np.zeros(len(X)))  # one class, other width
    _assert_same_state(before, clf, X)
    assert clf.n_features_in_ == 4
    with pytest.raises(ValueError):
        clf.set_params(power=-1.0).fit(X, y)
    _assert_same_state(before, clf, X)


@pytest.mark.parametrize(
    "params",
    [
        {"n_prototypes": 0},
        {"power": 0},
        {"eps": -1.0},
        {"learning_rate": 0.0},
        {"dropout": 1.0},
        {"batch_size": 0},
        {"attention": "nope"},
        {"max_epochs": 0},
        {"init": "zeros"},
    ],
)
def test_bad_hyperparameters_are_named(iris, params):
    X, y = iris
    with pytest.raises(ValueError, match=list(params)[0]):
        IDWAttentionClassifier(**params).fit(X, y)


def _roundtrip(clf):
    buffer = io.BytesIO()
    joblib.dump(clf, buffer)
    buffer.seek(0)
    return buffer


def test_joblib_roundtrip_predicts_identically_and_holds_no_tensors(fitted, iris):
    X, _ = iris
    loaded = joblib.load(_roundtrip(fitted))
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    assert not any(type(v).__module__.startswith("torch") for v in vars(fitted).values())


@pytest.mark.parametrize("init", ["kmeans", "random"])
def test_random_state_fixes_everything(iris, init):
    X, y = iris
    a = IDWAttentionClassifier(init=init, max_epochs=10, batch_size=32, random_state=3).fit(X, y)
    b = IDWAttentionClassifier(init=init, max_epochs=10, batch_size=32, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.prototypes_, b.prototypes_)
    np.testing.assert_array_equal(a.logits_, b.logits_)


def test_early_stopping_keeps_the_best_validation_score(iris):
    X, y = iris
    clf = IDWAttentionClassifier(early_stopping=True, n_iter_no_change=3, random_state=0).fit(X, y)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_[-4:]) or clf.n_iter_ == clf.max_epochs


def test_verbose_reports_each_epoch(iris, capsys):
    X, y = iris
    IDWAttentionClassifier(max_epochs=3, verbose=1, random_state=0).fit(X, y)
    assert capsys.readouterr().out.count("loss") == 3


def test_pipeline_grid_search_on_a_dataframe_with_string_labels():
    X, y = load_iris(return_X_y=True, as_frame=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    X_train, X_test, y_train, y_test = train_test_split(X, labels, random_state=0, stratify=labels)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), IDWAttentionClassifier(max_epochs=20, random_state=0)).set_output(
            transform="pandas"
        ),
        {"idwattentionclassifier__n_prototypes": [3, 6], "idwattentionclassifier__attention": ["idw", "dot"]},
        cv=3,
    ).fit(X_train, y_train)
    clf = search.best_estimator_[-1]
    np.testing.assert_array_equal(clf.feature_names_in_, X.columns)
    assert set(clf.classes_) == set(labels)
    assert search.score(X_test, y_test) > 0.85
    assert set(search.predict(X_test)) <= set(labels)


def test_dataframe_row_can_be_patched():
    X, y = load_iris(return_X_y=True, as_frame=True)
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
    clf.add_prototype(X.iloc[0], 2)
    assert clf.predict(X.iloc[:1])[0] == 2


def test_sample_weight_equals_repetition_for_full_batch_training(iris):
    X, y = iris
    w = np.random.default_rng(0).integers(0, 3, len(X))
    a = IDWAttentionClassifier(n_prototypes=6, max_epochs=10, random_state=0).fit(X, y, sample_weight=w)
    b = IDWAttentionClassifier(n_prototypes=6, max_epochs=10, random_state=0).fit(np.repeat(X, w, 0), np.repeat(y, w))
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X))


def _user_score(X, K):
    return -torch.cdist(X, K)  # softmax of negative Euclidean distance


def test_user_callable_attention_works_everywhere(iris):
    X, y = iris
    clf = IDWAttentionClassifier(attention=_user_score, n_prototypes=6, max_epochs=20, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.85
    np.testing.assert_allclose(_softmax(clf.attention_weights(X) @ clf.logits_), clf.predict_proba(X), atol=1e-12)
    assert clf.explain(X[:5]).contributions.shape == (5, 3)
    clf.add_prototype(X[0], 2)
    assert clf.predict(X[:1])[0] == 2
    np.testing.assert_array_equal(joblib.load(_roundtrip(clf)).predict(X), clf.predict(X))


def test_kernel_attention_learns_its_kernel_and_persists_it(iris):
    X, y = iris
    clf = IDWAttentionClassifier(attention="kernel", n_prototypes=6, max_epochs=20, random_state=0).fit(X, y)
    assert set(clf.attention_params_) == {"mixture_logits", "log_scales"}
    assert clf.attention_params_["log_scales"].shape == (4, X.shape[1])
    assert all(isinstance(a, np.ndarray) for a in clf.attention_params_.values())
    assert not np.allclose(clf.attention_params_["mixture_logits"], 0)  # trained, not left at init
    assert clf.score(X, y) > 0.85
    np.testing.assert_array_equal(joblib.load(_roundtrip(clf)).predict_proba(X), clf.predict_proba(X))


def test_relu_baseline_says_it_is_not_attention(iris):
    X, y = iris
    clf = IDWAttentionClassifier(attention="relu", n_prototypes=6, max_epochs=20, random_state=0).fit(X, y)
    with pytest.warns(UserWarning, match="not attention"):
        activations = clf.attention_weights(X)
    assert (activations >= 0).all() and not np.allclose(activations.sum(1), 1)
    np.testing.assert_allclose(_softmax(activations @ clf.logits_), clf.predict_proba(X), atol=1e-12)


def test_predictions_do_not_depend_on_the_chunk_size(fitted, iris, monkeypatch):
    X, _ = iris
    methods = ["predict", "predict_proba", "predict_log_proba", "decision_function", "attention_weights"]
    whole = {name: getattr(fitted, name)(X) for name in methods}
    # 7 rows a chunk (iris is float64)
    monkeypatch.setattr("protoattn.classifier._CHUNK_BYTES", 7 * len(fitted.prototypes_) * X.itemsize)
    for name in methods:
        np.testing.assert_allclose(getattr(fitted, name)(X), whole[name], rtol=1e-12, atol=1e-15)


def test_float32_input_predicts_like_float64(fitted, iris):
    X, _ = iris
    proba = fitted.predict_proba(X.astype(np.float32))
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(proba, fitted.predict_proba(X), atol=1e-5)


def test_diagonal_metric_learns_which_features_matter():
    """Five informative features and fifteen of noise: the learned scales rank them apart, and the
    metric beats the Euclidean distance there; with metric="euclidean" every scale stays 1."""
    X, y = make_classification(
        1500, n_features=20, n_informative=5, n_redundant=0, shuffle=False, class_sep=1.5, random_state=0
    )
    X = StandardScaler().fit_transform(X)  # shuffle=False: the informative features come first
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=500, random_state=0)
    diagonal = IDWAttentionClassifier(n_prototypes=8, max_epochs=40, random_state=0).fit(X_train, y_train)
    euclidean = IDWAttentionClassifier(n_prototypes=8, max_epochs=40, metric="euclidean", random_state=0)
    euclidean.fit(X_train, y_train)
    scales = diagonal.feature_scales_
    assert scales.shape == (20,) and scales[:5].min() > scales[5:].max()
    assert diagonal.score(X_test, y_test) > euclidean.score(X_test, y_test)
    np.testing.assert_array_equal(euclidean.feature_scales_, np.ones(20))
    # The scales are part of the model: prediction uses them, whatever metric says afterwards.
    expected = diagonal.predict_proba(X)
    np.testing.assert_array_equal(diagonal.set_params(metric="euclidean").predict_proba(X), expected)


def test_prediction_reads_the_fitted_state_not_parameters_changed_after_fit(iris, tmp_path):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=5, eps=1e-2, random_state=0).fit(X, y)
    expected = clf.predict_proba(X)
    assert clf.attention_ == "idw" and clf.eps_ == 1e-2
    for params in [{"attention": "dot"}, {"eps": 10.0}, {"attention": "relu", "eps": 0.0}, {"metric": "euclidean"}]:
        clf.set_params(**params)
        np.testing.assert_array_equal(clf.predict_proba(X), expected)
        assert clf.explain(X[:5]).weights.shape == (5, 3)
    clf.set_params(attention="nope")  # invalid: the next fit says so, prediction is unaffected
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    with pytest.raises(ValueError, match="'attention' parameter"):
        clf.fit(X, y)
    clf.set_params(attention="dot", eps=1e-3)
    clf.save(tmp_path / "model.protoattn")
    loaded = IDWAttentionClassifier.load(tmp_path / "model.protoattn")
    assert loaded.attention == "dot" and loaded.attention_ == "idw" and loaded.eps_ == 1e-2
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    # A refit takes the new parameters.
    refit = clf.fit(X, y)
    assert refit.attention_ == "dot" and refit.eps_ == 1e-3


def test_a_model_fitted_with_a_python_function_predicts_with_it_and_cannot_be_saved(iris, tmp_path):
    X, y = iris

    def score(X, K):
        return -torch.cdist(X, K)

    clf = IDWAttentionClassifier(attention=score, n_prototypes=6, max_epochs=3, random_state=0).fit(X, y)
    expected = clf.predict_proba(X)
    assert clf.attention_ is score
    clf.set_params(attention="idw")
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    with pytest.raises(TypeError, match="attention is a Python function"):
        clf.save(tmp_path / "model.protoattn")


@pytest.mark.parametrize("empty", [[], (), np.array([], dtype=int), np.array([])])
def test_removing_no_prototypes_changes_nothing(fitted, iris, empty):
    X, _ = iris
    clf = joblib.load(_roundtrip(fitted))
    before = _state(clf, X)
    assert clf.remove_prototypes(empty) is clf
    _assert_same_state(before, clf, X)
