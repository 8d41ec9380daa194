"""Bad input gets a clear error and changes nothing; training and prediction stay finite at the extremes."""

import copy
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from protoattn import ATTENTIONS, IDWAttentionClassifier
from protoattn.attention import SOFTMAX_FREE
from protoattn.classifier import DISTANCE_ATTENTIONS, _chunk_rows


def _state(clf, X):
    return clf.prototypes_.copy(), clf.logits_.copy(), clf.patched_prototypes_.copy(), clf.predict_proba(X)


def _assert_same_state(before, clf, X):
    for a, b in zip(before, _state(clf, X), strict=True):
        np.testing.assert_array_equal(a, b)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ------------------------------------------------------------------------------------- bad input

BAD_X = {
    "inf": (np.full((2, 4), np.inf), ValueError, "Input X contains infinity"),
    "wrong width": (np.zeros((2, 3)), ValueError, "X has 3 features, but .* expecting 4"),
    "empty": (np.zeros((0, 4)), ValueError, "0 sample"),
    "1-D": (np.zeros(4), ValueError, "(?s)Expected 2D array.*reshape"),
    "3-D": (np.zeros((2, 4, 1)), ValueError, "dim 3"),
    "strings": ([["a", 1.0, 2.0, 3.0]], ValueError, "not numbers.*categorical_features"),
    "sparse with infinity": (sp.csr_matrix(np.full((2, 4), np.inf)), ValueError, "Input X contains infinity"),
}
PREDICTING = ["predict", "predict_proba", "predict_log_proba", "decision_function", "attention_weights", "explain"]


@pytest.mark.parametrize("case", sorted(BAD_X))
@pytest.mark.parametrize("method", PREDICTING)
def test_bad_X_is_refused_by_every_method_and_changes_nothing(fitted, iris, method, case):
    X, _ = iris
    bad, error, message = BAD_X[case]
    before = _state(fitted, X)
    with pytest.raises(error, match=message):
        getattr(fitted, method)(bad)
    _assert_same_state(before, fitted, X)


@pytest.mark.parametrize(
    "value, message", [(np.inf, "Input X contains infinity"), (-np.inf, "Input X contains infinity")]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_bad_value_in_any_row_chunk_is_refused(fitted, value, message, dtype):
    # Prediction checks X a chunk of rows at a time: a bad value in the last of several chunks.
    rows = 2 * _chunk_rows(len(fitted.prototypes_)) + 1
    X = np.random.default_rng(0).standard_normal((rows, 4)).astype(dtype)
    X[-1, 2] = value
    for method in PREDICTING:
        with pytest.raises(ValueError, match=message):
            getattr(fitted, method)(X)


def test_finite_rows_whose_sum_overflows_are_accepted(fitted):
    # float32 values whose sum is infinite are still finite: the chunk's quick check must not refuse them.
    X = np.full((3, 4), np.finfo(np.float32).max / 2, dtype=np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(X.sum(dtype=np.float32))
    assert fitted.predict(X).shape == (3,)


def test_assume_finite_skips_the_check(fitted):
    import sklearn

    X = np.full((2, 4), np.inf)
    with sklearn.config_context(assume_finite=True), np.errstate(invalid="ignore"):
        fitted.predict_proba(X)  # no error: the user vouched for X, as in scikit-learn
    with pytest.raises(ValueError, match="Input X contains infinity"):
        fitted.predict_proba(X)


def test_reversed_fortran_and_read_only_arrays_work_like_a_copy(fitted, iris):
    X, _ = iris
    reversed_copy = X[::-1].copy()
    read_only = X[::-1].copy()
    read_only.flags.writeable = False
    expected = fitted.predict_proba(reversed_copy)
    for view in [X[::-1], np.asfortranarray(X)[::-1], read_only, X[::-1].astype(np.float32)[:, ::-1][:, ::-1]]:
        np.testing.assert_allclose(fitted.predict_proba(view), expected, rtol=1e-5)
        np.testing.assert_array_equal(fitted.explain(view).predicted, fitted.predict(reversed_copy))
    clf = copy.deepcopy(fitted)
    clf.add_prototype(X[0, ::-1], 0)
    assert clf.predict(X[:1, ::-1])[0] == 0


@pytest.mark.parametrize(
    "refit, error, message",
    [
        (lambda c, X, y: c.fit(X.astype(object).tolist()[:-1] + [["a"] * 4], y), ValueError, "not numbers"),
        (lambda c, X, y: c.fit(np.where(X > 2, np.inf, X), y), ValueError, "Input X contains infinity"),
        (
            lambda c, X, y: c.fit(np.column_stack([X[:, :3], np.nan * X[:, 3]]), y),
            ValueError,
            "no value in the training",
        ),
        (lambda c, X, y: c.fit(X, np.where(y == 0, np.nan, y)), ValueError, "Input y contains NaN"),
        (lambda c, X, y: c.fit(X, X[:, 0]), ValueError, "Unknown label type"),
        (lambda c, X, y: c.fit(X, np.zeros(len(y))), ValueError, "at least 2 classes"),
        (lambda c, X, y: c.fit(X, y[:-1]), ValueError, "inconsistent numbers of samples"),
        (lambda c, X, y: c.fit(X[:0], y[:0]), ValueError, "0 sample"),
        (lambda c, X, y: c.fit(X, y, sample_weight=-np.ones(len(y))), ValueError, "sample_weight"),
        (lambda c, X, y: c.set_params(learning_rate=1e38).fit(X, y), ValueError, "learning_rate=1e\\+38 is too large"),
    ],
)
def test_bad_training_input_is_refused_and_a_refit_changes_nothing(fitted, iris, refit, error, message):
    X, y = iris
    clf = copy.deepcopy(fitted)
    before = _state(clf, X)
    with pytest.raises(error, match=message):
        refit(clf, X, y)
    _assert_same_state(before, clf, X)


@pytest.mark.parametrize(
    "x, y, kwargs, error, message",
    [
        (["a", 0.0, 0.0, 0.0], 0, {}, ValueError, "not numbers.*categorical_features"),
        (sp.csr_matrix(np.full((1, 4), np.inf)), 0, {}, ValueError, "infinity"),
        (np.zeros(0), 0, {}, ValueError, "0 feature"),
        (None, 0, {}, ValueError, "x must be one sample of 4 features"),
        (np.zeros(4), None, {}, ValueError, "Unknown label None"),
        (np.zeros(4), 0, {"replace": True}, ValueError, "replace"),
        (np.zeros(4), 0, {"margin": "1"}, ValueError, "margin"),
        (np.zeros(4), 0, {"margin": np.inf}, ValueError, "margin"),
    ],
)
def test_more_bad_add_prototype_input_changes_nothing(fitted, iris, x, y, kwargs, error, message):
    X, _ = iris
    before = _state(fitted, X)
    with pytest.raises(error, match=message):
        fitted.add_prototype(x, y, **kwargs)
    _assert_same_state(before, fitted, X)


@pytest.mark.parametrize("indices", [[[0]], None, np.array([0.0]), [True]])
def test_more_bad_remove_prototypes_input_changes_nothing(fitted, iris, indices):
    X, _ = iris
    before = _state(fitted, X)
    with pytest.raises(TypeError, match="indices must be integers"):
        fitted.remove_prototypes(indices)
    _assert_same_state(before, fitted, X)


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "3", None])
def test_bad_top_k_is_named(fitted, iris, top_k):
    X, _ = iris
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        fitted.explain(X, top_k=top_k)


# ------------------------------------------------------------------------------------ divergence


def test_diverging_training_keeps_finite_parameters_and_says_how_to_fix(iris):
    X, y = iris
    with pytest.warns(ConvergenceWarning, match="diverged.*Lower learning_rate"):
        clf = IDWAttentionClassifier(learning_rate=1e30, max_epochs=5, random_state=0).fit(X, y)
    assert clf.n_iter_ < 5 and np.all(np.isfinite(clf.loss_curve_))
    assert np.all(np.isfinite(clf.prototypes_)) and np.all(np.isfinite(clf.logits_))
    assert np.all(np.isfinite(clf.predict_proba(X)))


# -------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
@pytest.mark.parametrize("power", [0.5, 400.0])
@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_scores_weights_and_gradients_stay_finite_on_hits_and_far_away(name, power, eps, dtype):
    keys = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1e6]], dtype=dtype, requires_grad=True)
    queries = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1e6, 1e6], [-3e6, 2.0]], dtype=dtype)
    score = ATTENTIONS[name]
    if isinstance(score, type):  # a learned score (implicit kernel attention): build it for 2 features
        score = score(2).to(dtype)
    scores = score(queries, keys, power=power, eps=eps)
    weights = torch.softmax(scores, 1)
    assert torch.isfinite(scores).all() and torch.isfinite(weights).all()
    (weights * torch.arange(3, dtype=dtype)).sum().backward()
    assert torch.isfinite(keys.grad).all()


def test_predictions_on_prototypes_far_from_the_origin_are_theirs():
    # float32 queries with norms around 100 and p = 2: the squared distance of a prototype to itself
    # comes out slightly negative, which must not flip the sign of its weight.
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10.0, size=(3, 100))
    X = np.repeat(centres, 30, axis=0) + rng.normal(size=(90, 100))
    y = np.repeat([0, 1, 2], 30)
    clf = IDWAttentionClassifier(power=2.0, n_prototypes=12, max_epochs=3, random_state=0).fit(X, y)
    proba = clf.predict_proba(clf.prototypes_.astype(np.float32))
    assert np.all(np.isfinite(proba)) and np.all(proba >= 0)
    np.testing.assert_array_equal(proba.argmax(1), clf.logits_.argmax(1))


@pytest.mark.parametrize("order", ["C", "F"])
def test_predictions_of_big_inputs_match_small_ones(fitted, iris, order):
    # Each row of an input of many chunks must get what it gets alone, whatever the memory order of X.
    X, _ = iris
    big = np.asarray(np.tile(X, (1200, 1)), order=order)
    assert len(big) > 2 * _chunk_rows(len(fitted.prototypes_))
    np.testing.assert_allclose(fitted.predict_proba(big)[: len(X)], fitted.predict_proba(X), rtol=1e-10)
    np.testing.assert_array_equal(fitted.predict(big.astype(np.float32)), np.tile(fitted.predict(X), 1200))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor", [1.0, 30.0, 1e3, -1e3])
def test_probabilities_stay_finite_with_huge_logits(fitted, iris, factor, dtype):
    # Softmax skips the max-shift while every logit is within half the log of the largest float (±44
    # in float32, ±354 in float64), where exponentials cannot overflow; the factors cross both.
    X, _ = iris
    clf = copy.deepcopy(fitted)
    clf.logits_ = clf.logits_ * factor
    X = X.astype(dtype)
    proba = clf.predict_proba(X)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    # float32 input computes in float32, exponentials too; float64 in float64.
    rtol, atol = (1e-5, 1e-30) if dtype == np.float32 else (1e-9, 1e-300)
    np.testing.assert_allclose(proba, _softmax(clf.decision_function(X)), rtol=rtol, atol=atol)


def _problem(seed, n_classes, n_features, per_class, constant, twice, scale, dtype, **params):
    """A small classification problem with X in ``dtype`` at ``scale``, and the estimator's params."""
    y = np.arange(n_classes * per_class) % n_classes
    X = np.random.default_rng(seed).normal(size=(len(y), n_features)) + y[:, None]
    if constant:
        X[:, 0] = 1.5
    if twice:  # every row duplicated
        X, y = np.concatenate([X, X]), np.concatenate([y, y])
    return (X * scale).astype(dtype), y, params


problems = st.builds(
    _problem,
    seed=st.integers(0, 2**16),
    n_classes=st.integers(2, 3),
    n_features=st.integers(1, 5),
    per_class=st.integers(2, 6),
    constant=st.booleans(),
    twice=st.booleans(),
    scale=st.integers(-6, 6).map(lambda exponent: 10.0**exponent),
    dtype=st.sampled_from([np.float32, np.float64]),
    attention=st.sampled_from(sorted(ATTENTIONS)),
    power=st.sampled_from([0.5, 400.0]) | st.floats(0.5, 400.0),
    eps=st.sampled_from([0.0, 1e-3]),
    n_prototypes=st.integers(1, 6),
)
# The corners, always tried: extreme powers and scales, both dtypes, duplicates and a constant feature.
EXTREMES = [
    _problem(0, 3, 5, 4, True, True, 1e6, np.float32, attention="neg_dist", power=400.0, eps=0.0, n_prototypes=6),
    _problem(1, 2, 3, 5, False, False, 1e-6, np.float64, attention="idw", power=0.5, eps=1e-3, n_prototypes=4),
    _problem(2, 2, 4, 3, True, False, 1e-6, np.float32, attention="inv_dist", power=400.0, eps=0.0, n_prototypes=6),
    _problem(3, 3, 2, 3, False, True, 1e6, np.float64, attention="gaussian", power=400.0, eps=1e-3, n_prototypes=3),
    _problem(4, 3, 5, 4, False, False, 1e6, np.float32, attention="expressive", power=2.0, eps=1e-3, n_prototypes=6),
]


def _fit(X, y, params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # k-means on duplicates, diverging epochs
        return IDWAttentionClassifier(max_epochs=2, random_state=0, **params).fit(X, y)


def _queries(clf, X):
    """Training rows, every prototype exactly, far-away points and a midpoint, in X's dtype."""
    return np.vstack([X, clf.prototypes_, 100 * X[:3], (X[:1] + X[-1:]) / 2]).astype(X.dtype)


SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)


@SETTINGS
@given(problems)
@example(EXTREMES[0])
@example(EXTREMES[1])
@example(EXTREMES[2])
@example(EXTREMES[3])
@example(EXTREMES[4])
def test_probabilities_are_finite_consistent_and_decompose(problem):
    X, y, params = problem
    clf = _fit(X, y, params)
    assert np.all(np.isfinite(clf.prototypes_)) and np.all(np.isfinite(clf.logits_))
    Q = _queries(clf, X)
    proba = clf.predict_proba(Q)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    # predict is the most probable class; where two classes tie up to rounding, either one.
    predicted = clf.predict(Q)
    top = np.sort(proba, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-12
    np.testing.assert_array_equal(predicted[clear], clf.classes_[proba.argmax(1)][clear])
    chosen = proba[np.arange(len(Q)), np.searchsorted(clf.classes_, predicted)]
    np.testing.assert_allclose(chosen, top[:, -1], atol=1e-12)
    # The decomposition: probabilities are the softmax of attention-weighted prototype logits.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # relu's "not attention" notice
        weights = clf.attention_weights(Q)
    # Prediction of Shepard weights runs the CPU speed variant, which rounds a hit's zero distance
    # differently: d^p with p < 2 magnifies that rounding.
    sharp_at_hits = params["attention"] == "idw" and params.get("power", 2.0) < 2
    tolerance = 1e-4 if X.dtype == np.float32 or sharp_at_hits else 1e-9
    if params["attention"] not in SOFTMAX_FREE:  # the FC-ReLU baseline's activations need not sum to 1
        np.testing.assert_allclose(weights.sum(1), 1.0, atol=tolerance)
    np.testing.assert_allclose(_softmax(weights @ clf.logits_), proba, atol=tolerance)
    explanation = clf.explain(Q, top_k=len(clf.prototypes_))
    np.testing.assert_allclose(explanation.contributions.sum(1), (weights @ clf.logits_).max(1), atol=tolerance)


@SETTINGS
@given(problems, st.sampled_from(["row", "midpoint", "far"]))
@example(EXTREMES[0], "far")
@example(EXTREMES[1], "midpoint")
@example(EXTREMES[2], "row")
@example(EXTREMES[3], "far")
@example(EXTREMES[4], "row")
def test_add_prototype_flips_its_point(problem, where):
    X, y, params = problem
    clf = _fit(X, y, params)
    x = {"row": X[1], "midpoint": (X[0] + X[-1]) / 2, "far": 100 * X[0]}[where].astype(np.float64)
    target = clf.classes_[clf.predict_proba([x])[0].argmin()]
    before = _state(clf, X)
    try:
        clf.add_prototype(x, target)
    except ValueError as error:
        # A dot-product score can give the new key too little weight at x; distances never do.
        assert params["attention"] not in DISTANCE_ATTENTIONS and "Cannot patch" in str(error)
        _assert_same_state(before, clf, X)
        return
    assert clf.predict([x])[0] == target
    assert clf.patched_prototypes_[-1] and np.all(np.isfinite(clf.logits_))


# ------------------------------------------------------------------------ extreme values, refused


@pytest.mark.parametrize("attention, eps", [("idw", 1e-3), ("idw", 0.0), ("expressive", 1e-3)])
def test_rows_too_large_for_float64_are_refused_not_predicted_nan(iris, attention, eps):
    # idw with eps > 0 predicts through the numpy speed variant, the others through the torch
    # network: at |x| ~ 1e160 squared distances (and expressive's squared products) overflow float64,
    # which used to give NaN probabilities and classes_[0] silently.
    X, y = iris
    clf = IDWAttentionClassifier(attention=attention, eps=eps, max_epochs=5, random_state=0).fit(X, y)
    big = np.vstack([X[:3], np.full((1, 4), 1e160)])
    for method in ["predict", "predict_proba", "decision_function", "predict_log_proba", "attention_weights"]:
        with pytest.raises(ValueError, match=r"row 3.*1e\+160.*too large.*Scale X as the training"):
            getattr(clf, method)(big)
    np.testing.assert_array_equal(clf.predict(X[:3]), clf.predict(big[:3]))  # nothing else changed


@pytest.mark.parametrize("attention, eps", [("idw", 1e-3), ("idw", 0.0), ("expressive", 1e-3), ("kernel", 1e-3)])
def test_float32_rows_beyond_its_range_are_computed_in_float64(iris, attention, eps):
    # Squares of float32 values beyond about 1e19 overflow float32: such rows are computed in float64,
    # as float64 input would be, never NaN.
    X, y = iris
    clf = IDWAttentionClassifier(attention=attention, eps=eps, max_epochs=5, random_state=0).fit(X, y)
    big = np.vstack([X[:3], np.full((1, 4), 1e20), [[-3e19, 1e19, 0.0, 2e19]]]).astype(np.float32)
    proba = clf.predict_proba(big)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba[3:], clf.predict_proba(big[3:].astype(np.float64)), rtol=1e-5)
    np.testing.assert_allclose(proba[:3], clf.predict_proba(X[:3]), rtol=1e-5)
    np.testing.assert_array_equal(clf.predict(big), clf.classes_[proba.argmax(1)])


@pytest.mark.parametrize("learning_rate", [1e3, 1e5])
def test_a_fit_that_diverges_still_predicts_finite_probabilities_on_its_training_data(iris, learning_rate):
    # A kernel's scales after one step of learning_rate 1e3 are finite but overflow exp: the
    # parameters that training ends with must predict finite values on its own data, or fit says why.
    X, y = iris
    with pytest.warns(ConvergenceWarning, match="Lower learning_rate"):
        clf = IDWAttentionClassifier(attention="kernel", learning_rate=learning_rate, random_state=0).fit(X, y)
    for dtype in [np.float64, np.float32]:
        assert np.all(np.isfinite(clf.predict_proba(X.astype(dtype))))


def test_partial_fit_refuses_rows_too_large_to_train_on_like_fit(iris):
    # Numbers at 1e20 train like any others (standardised in the model); at 1e200 their variance
    # overflows float64: fit and partial_fit refuse them alike, and a refused call changes nothing.
    X, y = iris
    assert IDWAttentionClassifier(random_state=0).fit(X * 1e20, y).score(X * 1e20, y) > 0.9
    message = "too large for training"
    with pytest.raises(ValueError, match=message):
        IDWAttentionClassifier().fit(X * 1e200, y)
    clf = IDWAttentionClassifier()
    with pytest.raises(ValueError, match=message):
        clf.partial_fit(X * 1e200, y, classes=[0, 1, 2])
    assert not hasattr(clf, "classes_")  # nothing changed: the next call is still a first one
    first = IDWAttentionClassifier(random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    before = first.prototypes_.copy()
    with pytest.raises(ValueError, match=message):
        first.partial_fit(X * 1e200, y)
    np.testing.assert_array_equal(first.prototypes_, before)


@pytest.mark.parametrize("eps", [1e-39, 5e-324, 1e31, 1e300, -1e-3, np.nan, np.inf])
def test_eps_outside_the_range_where_training_works_is_refused(iris, eps):
    X, y = iris
    with pytest.raises(ValueError, match=r"'eps' parameter.*\{0\} or a float in the range \[1e-30, 1e\+30\]"):
        IDWAttentionClassifier(eps=eps, max_epochs=2).fit(X, y)


@pytest.mark.parametrize("eps", [0, 0.0, 1e-30, 1e-3, 1e30])
def test_eps_at_the_ends_of_its_range_trains(iris, eps):
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = IDWAttentionClassifier(eps=eps, max_epochs=3, random_state=0).fit(X, y)
    assert clf.n_iter_ == 3 and np.all(np.isfinite(clf.predict_proba(X)))


@pytest.mark.parametrize("weight", [-1, -1e-9, np.nan, np.inf, "2", None, True])
@pytest.mark.parametrize("how", ["fit", "partial_fit"])
def test_bad_class_weight_values_are_refused_like_bad_sample_weights(iris, weight, how):
    X, y = iris
    clf = IDWAttentionClassifier(class_weight={0: weight, 1: 1.0, 2: 1.0}, max_epochs=2)
    with pytest.raises(ValueError, match=r"class_weight\[0\].*non-negative finite"):
        clf.fit(X, y) if how == "fit" else clf.partial_fit(X, y, classes=[0, 1, 2])
    assert not hasattr(clf, "classes_")


@pytest.mark.parametrize("margin", [40.0001, 1e6, 1e300])
def test_add_prototype_refuses_a_margin_beyond_what_probabilities_can_show(fitted, iris, margin):
    X, _ = iris
    before = _state(fitted, X)
    with pytest.raises(ValueError, match="margin must be a positive number of at most 40"):
        fitted.add_prototype(X[0], 1, margin=margin)
    _assert_same_state(before, fitted, X)


def test_add_prototype_takes_the_largest_margin(fitted, iris):
    X, _ = iris
    clf = copy.deepcopy(fitted)
    clf.add_prototype(X[0], 1, margin=40)
    assert clf.predict(X[:1])[0] == 1 and np.all(np.isfinite(clf.predict_proba(X)))
