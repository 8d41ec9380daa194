"""The scikit-learn estimator: validation, fit/predict, prototypes, explanations and patches."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import threading
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import log_softmax
from sklearn import config_context, get_config
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import (
    assert_all_finite,
    check_consistent_length,
    check_random_state,
    column_or_1d,
    compute_sample_weight,
)
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted, validate_data
from torch import nn

from . import _compute, _docs, _fast, _persistence, _tables, _training
from ._network import PrototypeAttention
from .attention import ATTENTIONS, BOUNDED_ATTENTIONS, SOFTMAX_FREE, squared_distances

#: Scores built on distances, where ``power`` means something and is annealed from 2 in training.
DISTANCE_ATTENTIONS = frozenset({"idw", "inv_dist", "neg_dist", "gaussian"})

#: ``dropout="auto"``: this attention dropout while training sees at most ``DROPOUT_MAX_ROWS`` rows
#: (where scikit-learn's HistGradientBoosting turns early stopping on), none beyond.
AUTO_DROPOUT = 0.1
DROPOUT_MAX_ROWS = 10_000

#: The largest ``margin`` of :meth:`IDWAttentionClassifier.add_prototype`: softmax gives the class a
#: probability of ``1 - e^-40``, 1 in float64, so a larger margin changes nothing at x and only moves the
#: predictions around it (a margin of 1e6 changed 98 of iris's 150).
MAX_MARGIN = 40.0

# Rows per chunk in prediction: each (rows, m) buffer holds about 2 MB in float32 (4 MB in float64),
# large enough that per-chunk overheads vanish and small enough that the passes over it stay in the
# cache; memory beyond the output is then bounded whatever the rows.
_CHUNK_BYTES = 2**21


def _chunk_rows(m):
    """Rows per prediction chunk for m prototypes, the same in float32 and float64 (the float64 passes
    gained nothing from chunks half as long, and lost to their overheads: ``benchmarks/RESULTS.md``)."""
    return max(1, _CHUNK_BYTES // (m * 4))


# add_prototype and remove_prototypes replace prototypes_, logits_, prototype_reach_, patched_prototypes_
# and patches_ together, holding this lock; predictions read prototypes_, logits_ and prototype_reach_
# under it (see _model), so one that runs beside a patch uses the model wholly before or wholly after
# it. Re-entrant: add_prototype predicts at x while it holds the lock. One for all estimators: it is
# held for microseconds to read, milliseconds to patch.
_PATCHING = threading.RLock()


@dataclass(frozen=True)
class Explanation:
    """Why each sample got its prediction: the ``top_k`` prototypes that contribute most, and which
    features made the sample close to each.

    The contribution of prototype i to sample x is ``a_i(x) * logits_[i, predicted class]``; the sum
    over *all* prototypes is ``logit``, the predicted class's logit, exactly.

    Attributes
    ----------
    predicted : ndarray of shape (n_samples,)
        Predicted labels.
    logit : ndarray of shape (n_samples,)
        Logit of the predicted class (the sum of every prototype's contribution).
    prototype_indices : ndarray of shape (n_samples, top_k)
        Rows of ``prototypes_``, largest contribution first.
    prototype_labels : ndarray of shape (n_samples, top_k)
        Their classes (``prototype_labels_``).
    weights : ndarray of shape (n_samples, top_k)
        Their attention weights.
    contributions : ndarray of shape (n_samples, top_k)
        Weight times the prototype's logit for the predicted class.
    feature_terms : ndarray of shape (n_samples, top_k, n_features)
        Each feature's term of the squared distance between the sample and the prototype in the
        model's metric (standardised features times ``feature_scales_``, rescaled by ``d / d_observed``
        where the sample has missing values): they sum to that distance; a missing feature's is 0.
    samples : ndarray of shape (n_samples, n_features)
        The samples in the user's units and categories (None or NaN where missing or unknown).
    prototypes : ndarray of shape (n_prototypes, n_features)
        The model's ``prototypes_``.
    feature_names : ndarray of shape (n_features,)
        ``feature_names_in_``, or ``x0, x1, ...``.
    index : ndarray of shape (n_samples,)
        The samples' labels: a DataFrame's index, else their positions.
    """

    predicted: np.ndarray
    logit: np.ndarray
    prototype_indices: np.ndarray
    prototype_labels: np.ndarray
    weights: np.ndarray
    contributions: np.ndarray
    feature_terms: np.ndarray
    samples: np.ndarray
    prototypes: np.ndarray
    feature_names: np.ndarray
    index: np.ndarray

    def to_frame(self):
        """One row per (sample, rank) as a :class:`pandas.DataFrame`."""
        import pandas as pd

        n, k = self.prototype_indices.shape
        return pd.DataFrame(
            {
                "sample": np.repeat(self.index, k),
                "rank": np.tile(np.arange(1, k + 1), n),
                "predicted": np.repeat(self.predicted, k),
                "prototype": self.prototype_indices.ravel(),
                "prototype_label": self.prototype_labels.ravel(),
                "weight": self.weights.ravel(),
                "contribution": self.contributions.ravel(),
            }
        )

    def feature_frame(self, i, rank=0):
        """Why sample ``i`` (a position) is close to its ``rank``-th prototype (0: the largest
        contribution): one row per feature with the sample's value, the prototype's value and the
        feature's term of their squared distance, largest term first."""
        import pandas as pd

        prototype = self.prototype_indices[i, rank]
        frame = pd.DataFrame(
            {
                "feature": self.feature_names,
                "sample": self.samples[i],
                "prototype": self.prototypes[prototype],
                "term": self.feature_terms[i, rank],
            }
        )
        return frame.sort_values("term", ascending=False, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class PatchReport:
    """What a patch would change, from :meth:`IDWAttentionClassifier.preview_patch`: the model is
    not changed, and :meth:`~IDWAttentionClassifier.add_prototype` with the same arguments changes
    exactly the predictions listed here.

    Attributes
    ----------
    changed : ndarray of int of shape (n_changed,)
        Positions of the rows of X whose prediction would change; each now predicts the patch's label.
    before, after : ndarray of shape (n_changed,)
        Their predictions before and after the patch.
    distances : ndarray of shape (n_samples,)
        Every row's distance from x in the model's distance: the learned metric on standardised
        features (``feature_scales_`` times the standardised values), the distance whose squared
        terms :attr:`Explanation.feature_terms` decomposes. Only rows with ``distances <= radius``
        can change.
    radius : float
        The patch's radius in that distance, ``"auto"`` resolved (``inf``: unbounded).
    label : label
        The class the patch predicts at x.
    index : ndarray of shape (n_samples,)
        The rows' labels: a DataFrame's index, else their positions.
    """

    changed: np.ndarray
    before: np.ndarray
    after: np.ndarray
    distances: np.ndarray
    radius: float
    label: object
    index: np.ndarray

    def to_frame(self):
        """The changed rows as a :class:`pandas.DataFrame`: ``row`` (the index), ``before``, ``after``
        and ``distance`` from x, nearest first."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "row": self.index[self.changed],
                "before": self.before,
                "after": self.after,
                "distance": self.distances[self.changed],
            }
        )
        return frame.sort_values("distance", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class _Patch:
    """A patched model's arrays, built by :meth:`IDWAttentionClassifier._plan_patch`."""

    model: tuple  # (prototypes, logits, reach)
    patched: np.ndarray
    patches: dict
    index: int
    radius: float


class IDWAttentionClassifier(ClassifierMixin, BaseEstimator):
    """Classifier by attention over learned prototypes, with inverse distance weighting.

    For an input x, prototypes (keys) k_1..k_m and value rows v_1..v_m (one logit per class) the
    model outputs ``logits(x) = Σ_i a_i(x) v_i`` with ``a(x) = softmax(score(x, K))``. The default
    score ``-log(eps + ‖x - k‖^p)`` makes softmax Shepard's inverse distance weighting,
    ``a_i ∝ 1 / (eps + ‖x - k_i‖^p)``, so the keys become prototypes in input space and the values
    their class logits: the fitted model is readable (``prototypes_``, ``logits_``), every
    prediction decomposes exactly into prototype contributions (:meth:`explain`), and a special case
    can be patched by hand (:meth:`add_prototype`).

    Parameters
    ----------
    categorical_features : "from_dtype", list of str or int, boolean mask or None, default="from_dtype"
        Which features are categories, as in :class:`~sklearn.ensemble.HistGradientBoostingClassifier`:
        ``"from_dtype"`` takes the columns of a DataFrame whose dtype is ``category``, ``object``,
        ``string`` or ``bool``. Each becomes a one-hot block inside the model with one learned scale,
        and a prototype's value is one of its training categories; a category unseen in training
        counts as missing.
    log_features : "auto", list of str or int, boolean mask or None, default="auto"
        Numeric features compared on a logarithmic scale, ``asinh(x / u)`` with u the median magnitude
        (``log(2x / u)`` for large x, defined for 0 and negative values, the same whatever the units):
        ``"auto"`` takes heavy-tailed amounts, where plain differences would let the largest values
        decide every distance: features never negative in the training data with a skewness above 2
        (counts, populations, prices), and features of either sign whose standard deviation exceeds 10
        median absolute deviations, with tails heavier than Laplace's (profits and losses); both with
        a positive median magnitude. ``prototypes_`` stay in the user's units. None compares every
        feature as it is.
    n_prototypes : int or None, default=None
        Number of prototypes m. ``None`` means 10 per class. With ``init="kmeans"`` the prototypes are
        spread evenly over the classes and a class never gets more prototypes than it has distinct
        training rows, so the fitted model may hold fewer.
    attention : str or callable, default="idw"
        The score inside softmax: one of ``protoattn.ATTENTIONS`` -- ``"idw"``, ``"inv_dist"``,
        ``"neg_dist"``, ``"gaussian"``, ``"dot"``, ``"cosine"``, ``"expressive"``, ``"kernel"``
        (implicit kernel attention, with a learned kernel) -- or ``"relu"``, the IDW paper's
        fully-connected ReLU baseline (no softmax: not an attention model), or a torch function
        ``(X, K) -> scores`` of shapes ``(n, d), (m, d) -> (n, m)``.
    power : float or "auto", default="auto"
        The exponent p on distances. ``"auto"`` is ``2 * round(sqrt(d / 2))`` for ``"idw"`` (Shepard's
        2 in the plane) and 2 for the other scores: IDW weights must sharpen as distances concentrate
        with the dimension. d counts the features, with numeric features that are near-copies of one
        another (correlated beyond 0.95 in the training data: repeated measures, one quantity in two
        units) counted once, since together they span one dimension.
        Training anneals it linearly from ``min(2, power)`` over the first half of the epochs, which
        avoids the vanishing gradients of very sharp weights at the start.
    eps : float, default=1e-3
        The ε in ``eps + ‖x - k‖^p``: a sample exactly on a prototype gives it weight ``1 / eps``.
        0, or between 1e-30 and 1e30 (training runs in float32, where smaller values round to 0).
    metric : {"diagonal", "euclidean"}, default="diagonal"
        ``"diagonal"`` learns one scale per feature, ``feature_scales_``, with the prototypes: the
        score sees ``s ∘ x`` and ``s ∘ k``, so distances are ``‖s ∘ (x - k)‖`` (relevance learning
        vector quantisation, Hammer and Villmann 2002). Scales start at 1 and learn at a tenth of
        ``learning_rate``, so that uninformative features shrink without overfitting small sets.
        ``"euclidean"`` keeps every scale at 1.
    init : {"kmeans", "random"}, default="kmeans"
        ``"kmeans"``: class-balanced k-means centres as keys and one-hot values. ``"random"``: the IDW
        attention paper's keys from a narrow Gaussian around the data mean and random values.
    max_epochs : int, default=100
        Maximum passes over the training data.
    batch_size : int or "auto", default="auto"
        Rows per optimisation step; ``"auto"`` is the whole data up to 512 rows, else 256.
    learning_rate : float, default=0.1
        Adam's initial learning rate, decayed to 0 by a cosine schedule over ``max_epochs``. The keys
        learn at this rate times the spread of the data (RMS of the feature standard deviations), so
        that training behaves the same whatever the units of the features.
    dropout : float or "auto", default="auto"
        Attention dropout: in each training step, each row's weight on each prototype is dropped
        with this probability and its other prototypes share the weight. Rows then learn to be
        predicted by more than their nearest prototype, which keeps prototypes near their class's
        data and regularises small tables; prediction uses every prototype. ``"auto"`` is 0.1 when
        training sees at most 10 000 rows, else 0: larger data leave the prototypes too busy to fit
        single rows, and dropout would only slow the steps. 0 turns it off; ``attention="relu"``, which
        has no softmax, trains without it.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified) and stop when its accuracy stops
        improving, keeping the best parameters. Otherwise stop on the training loss.
    validation_fraction : float, default=0.1
        Share of the training data held out when ``early_stopping=True``.
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before training stops.
    tol : float, default=1e-4
        Minimum improvement of the loss (or validation accuracy) that counts.
    class_weight : dict, "balanced" or None, default=None
        Weights per class, multiplied into ``sample_weight``.
    verbose : int, default=0
        Print the loss (and validation accuracy) after every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, shuffling and the validation split: equal seeds give equal models.
    warm_start : bool, default=False
        When fitted before on data of the same width and classes, :meth:`fit` continues from the
        current prototypes, logits and attention parameters (at the fitted power, without annealing)
        instead of initialising anew; ``n_prototypes`` and ``init`` then play no part.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where torch trains and predicts. ``"cuda"`` needs a CUDA GPU when fitting (else a ValueError);
        ``"auto"`` uses one when present. Fitted arrays are numpy whatever the device, and a model
        fitted on a GPU predicts on the CPU where CUDA is missing.

    Attributes
    ----------
    prototypes_ : ndarray of shape (m, n_features)
        The keys, in the user's units and categories: a float array when every feature is numeric, an
        object array of numbers and categories otherwise; numeric values lie within the training range
        of their column. ``prototypes_frame()`` shows them as a table.
    is_categorical_ : ndarray of bool of shape (n_features,)
        Which features are categorical (see ``categorical_features``).
    categories_ : list of ndarray
        The training categories of each categorical feature, sorted.
    feature_means_, feature_stds_ : ndarray of shape (n_features,)
        The training mean and standard deviation of each numeric feature, on its logarithmic scale
        where it has one; for a categorical feature 0 and the root of its one-hot block's total
        variance, ``sqrt(1 - Σ_c p_c²)`` over its categories' training shares p_c. The network
        standardises with them, so that units do not matter and every feature starts out counting
        alike.
    log_units_ : ndarray of shape (n_features,)
        For each feature compared on a logarithmic scale (see ``log_features``), the unit u of
        ``asinh(x / u)``, its training median magnitude; 0 for the others.
    logits_ : ndarray of shape (m, n_classes)
        The values: each prototype's class logits.
    prototype_labels_ : ndarray of shape (m,)
        Class of each prototype's largest logit.
    patched_prototypes_ : ndarray of bool of shape (m,)
        True for the prototypes placed by :meth:`add_prototype` rather than by training.
    prototype_reach_ : ndarray of shape (m,)
        Each prototype's reach in the model's distance (the learned metric on standardised features,
        see :meth:`preview_patch`): beyond it the prototype's attention weight is exactly 0. ``inf``
        for trained prototypes; a patch's ``radius`` for the prototypes :meth:`add_prototype` placed.
    patches_ : dict of str to ndarray
        The log of the patches that shaped the model, one entry per patched prototype still in it,
        in order: ``index`` (its row), ``label``, ``radius`` (``inf``: unbounded), ``margin`` and
        ``replaced`` (whether it overwrote a prototype). Kept by :meth:`save`, updated by
        :meth:`remove_prototypes`.
    attention_params_ : dict of str to ndarray
        Learned parameters of the attention score itself (empty for the parameter-free scores).
    feature_scales_ : ndarray of shape (n_features,)
        The diagonal metric: each feature's scale inside the score (all 1 with ``metric="euclidean"``).
        Larger means the feature counts more: a learned feature relevance.
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    power_ : float
        The power used after training (``power`` with ``"auto"`` resolved).
    attention_ : str or callable
        The score the model was trained with. Prediction reads it, ``eps_`` and the other fitted
        attributes, never the parameters: ``set_params`` after fit changes the next fit only.
    eps_ : float
        The ``eps`` the model was trained with.
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Weighted training cross-entropy after each epoch.
    validation_scores_ : list of float or None
        Validation accuracy after each epoch, when ``early_stopping=True``.
    best_validation_score_ : float or None
        Best of ``validation_scores_``.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X has string column names.

    Notes
    -----
    The model is computed by one torch network, ``softmax(score(x, K)) @ V``. With
    ``attention="idw"`` and ``eps > 0`` on the CPU, training and prediction take Shepard's weights in
    closed form instead, in numpy (:mod:`protoattn._fast`, tested equal to the network): several
    times faster there. Prediction runs in row chunks of about 2 MB, so memory beyond X and the
    result stays a few MB whatever the number of rows, and computes in X's dtype (float32 input is
    about twice as fast). ``benchmarks/RESULTS.md`` compares speed and accuracy with scikit-learn's
    classifiers.

    See Also
    --------
    sklearn.neighbors.NearestCentroid : One fixed prototype per class.
    sklearn.neural_network.MLPClassifier : A one-hidden-layer network without prototypes.

    References
    ----------
    .. [1] C. McCarter, "Inverse distance weighting attention", NeurIPS 2023 Associative Memory &
       Hopfield Networks workshop, arXiv:2310.18805.
    .. [2] D. Shepard, "A two-dimensional interpolation function for irregularly-spaced data", 1968.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from protoattn import IDWAttentionClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = IDWAttentionClassifier(n_prototypes=6, random_state=0).fit(X, y)
    >>> clf.prototypes_.shape, clf.logits_.shape
    ((6, 4), (6, 3))
    >>> clf.score(X, y) > 0.9
    True
    >>> int(clf.add_prototype([5.0, 3.0, 5.0, 2.0], 0))
    6
    >>> clf.predict([[5.0, 3.0, 5.0, 2.0]])
    array([0])
    """

    # The "?" link of the HTML repr (scikit-learn's mechanism) opens the class's entry in the API docs.
    _doc_link_module = "protoattn"
    _doc_link_template = _docs.ESTIMATOR_DOC_LINK

    _parameter_constraints: dict = {
        "categorical_features": [StrOptions({"from_dtype"}), "array-like", None],
        "log_features": [StrOptions({"auto"}), "array-like", None],
        "n_prototypes": [Interval(Integral, 1, None, closed="left"), None],
        "attention": [StrOptions(set(ATTENTIONS)), callable],
        "power": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        # 0, or within float32's range (training runs in float32) with room for the distances beside it:
        # eps below about 1e-38 rounds to 0 there and above about 3e38 overflows.
        "eps": [Options(Real, {0}), Interval(Real, 1e-30, 1e30, closed="both")],
        "metric": [StrOptions({"diagonal", "euclidean"})],
        "init": [StrOptions({"kmeans", "random"})],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left"), StrOptions({"auto"})],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
    }

    def __init__(
        self,
        categorical_features="from_dtype",
        log_features="auto",
        n_prototypes=None,
        attention="idw",
        power="auto",
        eps=1e-3,
        metric="diagonal",
        init="kmeans",
        max_epochs=100,
        batch_size="auto",
        learning_rate=0.1,
        dropout="auto",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        class_weight=None,
        verbose=0,
        random_state=None,
        warm_start=False,
        device="cpu",
    ):
        self.categorical_features = categorical_features
        self.log_features = log_features
        self.n_prototypes = n_prototypes
        self.attention = attention
        self.power = power
        self.eps = eps
        self.metric = metric
        self.init = init
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.dropout = dropout
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.class_weight = class_weight
        self.verbose = verbose
        self.random_state = random_state
        self.warm_start = warm_start
        self.device = device

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    @_compute.limit_threads(blas=True)
    def fit(self, X, y, sample_weight=None):
        """Fit prototypes and their logits by minimising weighted cross-entropy.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training data: numbers in any units, categories (see ``categorical_features``) and missing
            values (NaN, None, ``pd.NA``) as they come.
        y : array-like of shape (n_samples,)
            Class labels, any hashable values.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights. An integer weight k is exactly the same as repeating the row k times
            whenever training is full batch.

        Returns
        -------
        self : IDWAttentionClassifier
        """
        with self._unchanged_on_error():
            X, y, sample_weight = self._training_table(X, y, sample_weight, reset=True)
            check_classification_targets(y)
            classes, y_codes = np.unique(y, return_inverse=True)
            _check_class_weight(self.class_weight)
            if self.class_weight is not None:
                sample_weight = sample_weight * compute_sample_weight(self.class_weight, y)
            X, y_codes, sample_weight = _training.aggregate_duplicates(X, y_codes, sample_weight)
            present = np.unique(y_codes)
            if len(present) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes with positive "
                    f"sample_weight; got {len(present)} class."
                )
            warm = self.warm_start and hasattr(self, "logits_") and np.array_equal(self.classes_, classes)
            warm = warm and self.prototypes_.shape[1] == self.n_features_in_
            self.classes_ = classes
            self._fit_network(X, y_codes, sample_weight, check_random_state(self.random_state), warm)
        return self

    def _training_table(self, X, y, sample_weight, reset, stream=False):
        """X as the network's training input, standardised (see :mod:`protoattn._tables`), y and the
        sample weights. On ``reset``, learns which features are categories, their categories and the
        numeric statistics (weighted: a weight k is the same as k copies of a row); a ``stream``
        updates the statistics with every call's rows."""
        X = _check_2d(X)
        validate_data(self, X, reset=reset, skip_check_array=True)  # n_features_in_, feature_names_in_
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        if reset:
            self.attention_ = self.attention  # the standardisation depends on it (see _column_standardisation)
            names = getattr(self, "feature_names_in_", None)
            self.is_categorical_ = _tables.categorical_mask(X, self.categorical_features, self.n_features_in_, names)
        numeric, categorical = _tables.split(X, self.is_categorical_, [np.float64, np.float32], "allow-nan")
        numeric = numeric.toarray() if sp.issparse(numeric) else numeric  # training densifies
        sample_weight = _check_sample_weight(sample_weight, numeric, ensure_non_negative=True)
        used = slice(None) if np.all(sample_weight > 0) else sample_weight > 0  # a slice copies nothing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column with no value (refused below)
            low, high = np.nanmin(numeric[used], 0, initial=np.inf), np.nanmax(numeric[used], 0, initial=-np.inf)
        numeric_features = ~self.is_categorical_
        if reset:
            if np.any(low > high):
                features = np.flatnonzero(numeric_features)[low > high].tolist()
                raise ValueError(f"Numeric features {features} have no value in the training data: drop them.")
            self.categories_ = _tables.fit_categories(categorical[used])
            self._scaler = None
            self.log_units_ = np.zeros(self.n_features_in_)
            self.log_units_[numeric_features] = _tables.log_units(numeric[used], low, self._chosen_log_features(names))
        units = self.log_units_[numeric_features]
        logged = _tables.to_log(numeric, units)
        Z = _tables.encode(logged, categorical, self.is_categorical_, self.categories_)
        if reset or (stream and getattr(self, "_scaler", None) is not None):
            self.feature_means_, self.feature_stds_, self._scaler = _tables.standardisation(
                Z[used], self.is_categorical_, self.categories_, sample_weight[used], self._scaler
            )
        _check_trainable_scale(
            _tables.to_log(low, units),
            _tables.to_log(high, units),
            self.feature_means_[numeric_features],
            self.feature_stds_[numeric_features],
        )
        if not reset and hasattr(self, "_numeric_range"):  # the range of every row trained on so far
            low, high = np.minimum(low, self._numeric_range[0]), np.maximum(high, self._numeric_range[1])
        self._numeric_range = low, high
        offset, scale, _ = self._column_standardisation()
        Z = (Z - offset.astype(Z.dtype)) / scale.astype(Z.dtype)
        # In training's float32: data that differ only in their units are then the same bits.
        return Z.astype(np.float32), y, sample_weight

    def _columns(self):
        """The feature of each column of the network's input."""
        return _tables.column_features(self.is_categorical_, self.categories_)

    def _chosen_log_features(self, names):
        """``log_features`` as a boolean per numeric feature, or None for "auto"."""
        if isinstance(self.log_features, str):
            return None
        if self.log_features is None:
            return np.zeros(int((~self.is_categorical_).sum()), dtype=bool)
        mask = _tables.feature_mask(self.log_features, self.n_features_in_, names, "log_features")
        if np.any(mask & self.is_categorical_):
            named = np.flatnonzero(mask & self.is_categorical_).tolist()
            raise ValueError(f"log_features names categorical features {named}: a logarithmic scale is for numbers.")
        return mask[~self.is_categorical_]

    def _column_log_units(self, columns):
        """The logarithmic scale's unit of each column of the network's input (0: none)."""
        units = getattr(self, "log_units_", None)
        return np.zeros(len(columns)) if units is None else np.where(self.is_categorical_[columns], 0.0, units[columns])

    def _column_standardisation(self):
        """Offset, scale and feature of each column of the network's input: its feature's
        ``feature_means_`` and ``feature_stds_`` (0 and the block's scale in a one-hot block).
        Expressive attention, ``(x·k)²``, cannot tell x from -x: centred, it would merge the two sides
        of the mean (two moons at chance), so for it the offset stays 0 and the inputs are only
        rescaled."""
        columns = self._columns()
        numeric = ~self.is_categorical_[columns]
        centred = numeric & (self._fitted_attention()[0] != "expressive")
        offset = np.where(centred, self.feature_means_[columns], 0.0)
        return offset, self.feature_stds_[columns], columns

    def _encoded(self, X, dtype=np.float64, ensure_all_finite="allow-nan"):
        """A validated raw X (or prototypes) as the network's input in the user's units."""
        numeric, categorical = _tables.split(X, self.is_categorical_, dtype, ensure_all_finite)
        return _tables.encode(numeric, categorical, self.is_categorical_, self.categories_)

    def _to_keys(self, prototypes):
        """Prototypes in the user's units as training's keys (standardised)."""
        offset, scale, columns = self._column_standardisation()
        return (_tables.to_log(self._encoded(prototypes), self._column_log_units(columns)) - offset) / scale

    def _to_prototypes(self, keys):
        """Training's keys back in the user's units (within the training range: rounding can take them
        out by a little) and categories (one-hot blocks snapped to their largest entry)."""
        offset, scale, columns = self._column_standardisation()
        encoded = _tables.from_log(keys * scale + offset, self._column_log_units(columns))
        numeric = ~self.is_categorical_[columns]
        encoded[:, numeric] = np.clip(encoded[:, numeric], *self._numeric_range)
        return _tables.decode(encoded, self.is_categorical_, self.categories_)

    def _fit_network(self, X, y, weight, rng, warm=False):
        device = _compute.resolve_device(self.device, fitting=True)
        n_classes = len(self.classes_)
        if warm:
            keys, values = self._to_keys(self.prototypes_), self.logits_
        else:
            n_prototypes = self.n_prototypes or 10 * n_classes
            keys, values = self._initial_prototypes(X, y, weight, n_prototypes, rng)
        power = self._resolve_power(X)
        attention_params, scales = (self.attention_params_, self.feature_scales_) if warm else (None, None)
        reach = self._reach() if warm else None  # a patch's reach survives a warm fit
        network = self._build_network(
            keys, values, torch.float32, power, attention_params, scales, fitting=True, reach=reach
        )
        validation = None
        if self.early_stopping:
            X, y, weight, validation = _training.validation_split(X, y, weight, self.validation_fraction, rng)
            validation = tuple(t.to(device) for t in validation)
        anneal = not warm and self._attention_name() in DISTANCE_ATTENTIONS
        start = min(2.0, power) if anneal else power
        schedule = _training.power_schedule(start, power, self.max_epochs // 2)
        result = self._train(network, X, y, weight, rng, device, self.max_epochs, schedule, validation=validation)
        if not warm:
            self.patched_prototypes_ = np.zeros(len(self.prototypes_), dtype=bool)
            self.prototype_reach_ = np.full(len(self.prototypes_), np.inf)
            self.patches_ = self._no_patches()
            self._pending_prototypes = np.zeros(n_classes, dtype=np.intp)
        self.n_iter_ = result.n_iter
        self.loss_curve_ = result.loss_curve
        self.validation_scores_ = result.validation_scores if self.early_stopping else None
        self.best_validation_score_ = result.best_validation_score

    def _initial_prototypes(self, X, y, weight, n_prototypes, rng, counts=None):
        """Keys (standardised, one-hot blocks snapped to a category) and values to start from; missing
        cells count as the training mean."""
        X, n_classes = (np.nan_to_num(X) if np.isnan(X).any() else X), len(self.classes_)
        if self.init == "random":
            keys, values = _training.random_prototypes(X, weight, n_prototypes, n_classes, rng)
        else:
            if counts is None:
                counts = _training.prototypes_per_class(np.bincount(y, minlength=n_classes), n_prototypes)
            keys, values = _training.kmeans_prototypes(X, y, weight, counts, n_classes, rng)
        return self._to_keys(self._to_prototypes(keys)), values

    def _set_trained(self, network, power, result):
        """Copy a trained network (on any device) into the numpy fitted state, with what resumes training."""
        self.prototypes_ = self._to_prototypes(network.keys.detach().cpu().numpy().astype(np.float64))
        self.logits_ = network.values.detach().cpu().numpy().astype(np.float64)
        score_params = network.score.named_parameters() if isinstance(network.score, nn.Module) else []
        self.attention_params_ = {name: p.detach().cpu().numpy().astype(np.float64) for name, p in score_params}
        log_scales = torch.zeros(network.keys.shape[1]) if network.log_scales is None else network.log_scales
        self.feature_scales_ = log_scales.detach().exp().cpu().numpy().astype(np.float64)
        self.power_ = float(power)
        # Prediction reads the fitted state only (a later set_params changes the next fit, not this
        # model): the score and eps it was trained with.
        self.attention_, self.eps_ = self.attention, float(self.eps)
        self._spread = result.spread
        self._optimizer_state = result.optimizer_state

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            return n_samples if n_samples <= 512 else 256
        return min(self.batch_size, n_samples)

    @_fit_context(prefer_skip_nested_validation=True)
    @_compute.limit_threads(blas=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One pass of optimisation over the given rows, continuing from the current model.

        For data that arrive in chunks or do not fit in memory; ``dask_ml.wrappers.Incremental``
        calls it once per block. The first call needs ``classes``, every label the stream will
        hold. Prototypes are placed from the rows seen, as class-balanced k-means centres:
        ``n_prototypes`` is spread evenly over ``classes``, and each class gets its share from the
        first call that has rows of it (more calls when a call has fewer distinct rows of the class
        than its share), so a class missing from the first call is still learnt later. With
        ``init="random"`` all prototypes are drawn around the first call's rows.

        Each call then runs one epoch of Adam over its rows in batches of ``batch_size``, at the
        constant ``learning_rate`` and at the final power ``power_`` from the start: there is no
        count of epochs to anneal over, and prototypes placed on the data learn at the final power
        without the collapse that annealing avoids from a poor start. Adam's moment estimates carry
        over between calls (also from a :meth:`fit`, which a later ``partial_fit`` continues), and
        the keys' learning rate keeps the scale of the first rows that had a spread;
        ``dropout="auto"`` counts the call's rows. ``n_iter_`` counts the passes and ``loss_curve_``
        holds each pass's loss; ``max_epochs``, ``early_stopping`` and ``n_iter_no_change`` play no
        part.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows; every call must have the width of the first.
        y : array-like of shape (n_samples,)
            Labels, all among ``classes``.
        classes : array-like of shape (n_classes,), default=None
            Every class label. Required on the first call; later calls may omit it or repeat it.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights. ``class_weight="balanced"`` cannot be estimated from one chunk:
            pass a dict, e.g. from :func:`sklearn.utils.class_weight.compute_class_weight`.

        Returns
        -------
        self : IDWAttentionClassifier
        """
        first = not hasattr(self, "classes_")
        with self._unchanged_on_error():
            if self.class_weight == "balanced":
                raise ValueError(
                    'class_weight="balanced" is not supported by partial_fit, which sees one chunk at a '
                    "time: pass class_weight as a dict, e.g. dict(zip(classes, compute_class_weight("
                    '"balanced", classes=classes, y=y_all))).'
                )
            device = _compute.resolve_device(self.device, fitting=True)
            X, y, sample_weight = self._training_table(X, y, sample_weight, reset=first, stream=True)
            check_classification_targets(y)
            classes = self._stream_classes(classes, first)
            known = np.isin(y, classes)
            if not known.all():
                raise ValueError(
                    f"y holds labels {np.unique(y[~known]).tolist()} that are not in classes "
                    f"{classes.tolist()}: pass every label of the stream on the first call to partial_fit."
                )
            y_codes = np.searchsorted(classes, y)
            _check_class_weight(self.class_weight)
            if self.class_weight is not None:
                sample_weight = sample_weight * compute_class_weight(self.class_weight, classes=classes, y=y)[y_codes]
            X, y_codes, sample_weight = _training.aggregate_duplicates(X, y_codes, sample_weight)
            rng = check_random_state(self.random_state)
            if first:
                self.classes_ = classes
                self._start_stream(X, y_codes, sample_weight, rng)
            elif not hasattr(self, "_optimizer_state"):
                # A model from load() carries no optimiser state: training resumes with fresh Adam moments.
                self._pending_prototypes = np.zeros(len(self.classes_), dtype=np.intp)
                self._spread, self._optimizer_state = 0.0, {}
            self._place_owed_prototypes(X, y_codes, sample_weight, rng)
            if first and len(self.prototypes_) == 0:
                raise ValueError(
                    "The first call to partial_fit placed no prototype: it needs rows with positive "
                    "sample_weight of a class with a share of n_prototypes."
                )
            if len(X):
                self._stream_pass(X, y_codes, sample_weight, device, rng)
        return self

    def _stream_classes(self, classes, first):
        if classes is None:
            if first:
                raise ValueError(
                    "classes must be passed on the first call to partial_fit: every label the stream "
                    "will hold, e.g. classes=np.unique(y_all)."
                )
            return self.classes_
        classes = np.unique(np.asarray(classes))
        if first and len(classes) < 2:
            raise ValueError(f"classes must hold at least 2 labels, got {classes.tolist()}.")
        if not first and not np.array_equal(classes, self.classes_):
            raise ValueError(
                f"classes={classes.tolist()} differs from classes_={self.classes_.tolist()} of the model "
                "trained so far: classes cannot change between calls (start over with fit or a new model)."
            )
        return classes

    def _start_stream(self, X, y, weight, rng):
        """State of a model before its first pass: no prototype yet, every class owed its share."""
        n_classes = len(self.classes_)
        n_prototypes = self.n_prototypes or 10 * n_classes
        self.prototypes_, self.logits_ = self._to_prototypes(np.empty((0, X.shape[1]))), np.empty((0, n_classes))
        self._pending_prototypes = _training.prototypes_per_class(np.full(n_classes, n_prototypes), n_prototypes)
        if self.init == "random":
            keys, self.logits_ = self._initial_prototypes(X, y, weight, n_prototypes, rng)
            self.prototypes_ = self._to_prototypes(keys)
            self._pending_prototypes = np.zeros(n_classes, dtype=np.intp)
        self.patched_prototypes_ = np.zeros(len(self.prototypes_), dtype=bool)
        self.prototype_reach_ = np.full(len(self.prototypes_), np.inf)
        self.patches_ = self._no_patches()
        self.attention_params_ = {}
        self.feature_scales_ = np.ones(self.n_features_in_)
        self.power_ = self._resolve_power(X)
        self.n_iter_, self.loss_curve_ = 0, []
        self.validation_scores_ = self.best_validation_score_ = None
        self._spread, self._optimizer_state = 0.0, {}

    def _place_owed_prototypes(self, X, y, weight, rng):
        """Add the k-means prototypes still owed to each class, from this call's rows of that class."""
        counts = np.minimum(self._pending_prototypes, np.bincount(y, minlength=len(self.classes_)))
        if not counts.any():
            return
        rows = counts[y] > 0
        keys, values = self._initial_prototypes(X[rows], y[rows], weight[rows], None, rng, counts)
        self.prototypes_ = np.concatenate([self.prototypes_, self._to_prototypes(keys)])
        self.logits_ = np.concatenate([self.logits_, values])
        self.patched_prototypes_ = np.concatenate([self.patched_prototypes_, np.zeros(len(keys), dtype=bool)])
        self.prototype_reach_ = np.concatenate([self._reach(), np.full(len(keys), np.inf)])
        self._pending_prototypes = self._pending_prototypes - counts

    def _stream_pass(self, X, y, weight, device, rng):
        network = self._build_network(
            self._to_keys(self.prototypes_),
            self.logits_,
            torch.float32,
            self.power_,
            self.attention_params_,
            self.feature_scales_,
            fitting=True,
            reach=self._reach(),
        )
        result = self._train(network, X, y, weight, rng, device, 1, lambda epoch: self.power_, stream=True)
        self.n_iter_ += result.n_iter
        self.loss_curve_ = [*self.loss_curve_, *result.loss_curve]

    def _train(self, network, X, y, weight, rng, device, max_epochs, power_schedule, validation=None, stream=False):
        """Train the network on the rows and copy it into the fitted attributes: what :meth:`fit` and
        :meth:`partial_fit` share. A ``stream`` pass continues the learning rate's scale and Adam's
        moments of the calls before, at a constant learning rate."""
        seed = int(rng.randint(2**31 - 1)) + (self.n_iter_ if stream else 0)  # each pass its own shuffle
        network = network.to(device)
        result = _training.train(
            network,
            torch.as_tensor(X, dtype=torch.float32, device=device),
            torch.as_tensor(y, device=device),
            torch.as_tensor(weight, dtype=torch.float32, device=device),
            validation=validation,
            max_epochs=max_epochs,
            batch_size=self._batch_size(len(X)),
            learning_rate=self.learning_rate,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            power_schedule=power_schedule,
            generator=torch.Generator().manual_seed(seed),
            verbose=self.verbose,
            spread=(self._spread or None) if stream else None,
            optimizer_state=self._optimizer_state if stream else None,
            anneal_learning_rate=not stream,
            project=self._projection(network),
            categorical=self.is_categorical_,
            dropout=self._resolve_dropout(len(X)),
        )
        self._set_trained(network, power_schedule(max_epochs), result)  # the final power, however training ended
        return result

    def _projection(self, network):
        """What keeps training's keys in the data after each step: numeric columns within the range of
        the rows trained on, one-hot blocks where they were placed, on a category."""
        offset, scale, columns = self._column_standardisation()
        frozen = self.is_categorical_[columns]
        bounds = []
        for bound, infinite in zip(self._numeric_range, (-np.inf, np.inf), strict=True):
            full = np.full(len(columns), infinite)
            logged = _tables.to_log(bound, self._column_log_units(columns)[~frozen])
            full[~frozen] = (logged - offset[~frozen]) / scale[~frozen]
            bounds.append(torch.as_tensor(full, dtype=network.keys.dtype, device=network.keys.device))
        keys = network.keys.detach()
        frozen = torch.as_tensor(np.flatnonzero(frozen), device=keys.device)
        placed = keys[:, frozen].clone()
        low, high = bounds
        if keys.is_cpu:  # numpy views of the same memory: a third of torch's cost per call on small arrays
            keys, frozen, placed, low, high = keys.numpy(), frozen.numpy(), placed.numpy(), low.numpy(), high.numpy()

        def project():
            if isinstance(keys, np.ndarray):  # maximum then minimum: twice as fast as numpy's clip here
                np.minimum(np.maximum(keys, low, out=keys), high, out=keys)
            else:
                torch.clamp(keys, low, high, out=keys)
            if len(frozen):
                keys[:, frozen] = placed

        return project

    def _attention_name(self):
        return self.attention if isinstance(self.attention, str) else None

    def _fitted_attention(self):
        """The fitted score and eps; the parameters for a model fitted before protoattn kept them."""
        return getattr(self, "attention_", self.attention), getattr(self, "eps_", self.eps)

    def _resolve_dropout(self, n_rows):
        attention = self._fitted_attention()[0]
        if isinstance(attention, str) and attention in SOFTMAX_FREE:
            return 0.0  # hidden units, not attention weights: nothing shares a dropped one's weight
        if self.dropout != "auto":
            return float(self.dropout)
        return AUTO_DROPOUT if n_rows <= DROPOUT_MAX_ROWS else 0.0

    def _resolve_power(self, X):
        """The power for training rows X (the network's standardised input)."""
        if self.power != "auto":
            return float(self.power)
        if self.attention != "idw":
            return 2.0
        categorical = self.is_categorical_
        n_features = categorical.sum() + _tables.distinct_features(X, ~categorical[self._columns()])
        # An even integer: the CPU's fast path (protoattn._fast) then takes the power by squaring.
        return 2.0 * max(round(math.sqrt(n_features / 2)), 1)

    def _build_network(
        self,
        keys,
        values,
        dtype,
        power,
        attention_params=None,
        feature_scales=None,
        fitting=False,
        attention=None,
        eps=None,
        reach=None,
    ):
        """The torch network of these arrays (``reach``: each prototype's, None or all ``inf`` for
        none). ``fitting``: keys and inputs are standardised, and the
        metric's scales trainable (with ``metric="diagonal"``); else keys are in the user's units, the
        network standardises, and the scales are constants, left out when all 1. ``attention`` and
        ``eps`` default to the parameters (training); prediction passes the fitted ones."""
        attention = self.attention if attention is None else attention
        eps = self.eps if eps is None else eps
        learn_scales = fitting and self.metric == "diagonal"
        log_scales = None
        if learn_scales or (feature_scales is not None and np.any(feature_scales != 1)):
            ones = np.ones(self.n_features_in_)
            log_scales = torch.log(torch.as_tensor(ones if feature_scales is None else feature_scales)).to(dtype)
        offset, scale, columns = self._column_standardisation()
        units = self._column_log_units(columns)
        entry = attention if callable(attention) else ATTENTIONS[attention]
        if isinstance(entry, type) and issubclass(entry, nn.Module):
            score = entry(keys.shape[1])
            if attention_params:
                score.load_state_dict({name: torch.as_tensor(a) for name, a in attention_params.items()})
        elif callable(attention):
            user_score = attention

            def score(X, K, *, power, eps):
                return user_score(X, K)
        else:
            score = entry
        network = PrototypeAttention(
            torch.as_tensor(keys, dtype=dtype),
            torch.as_tensor(values, dtype=dtype),
            score,
            power,
            eps,
            softmax=not (isinstance(attention, str) and attention in SOFTMAX_FREE),
            log_scales=log_scales,
            learn_scales=learn_scales,
            column_features=torch.as_tensor(columns) if self.is_categorical_.any() else None,
            offset=None if fitting else torch.as_tensor(offset, dtype=dtype),
            scale=None if fitting else torch.as_tensor(scale, dtype=dtype),
            reach=None if reach is None or np.all(np.isinf(reach)) else torch.as_tensor(reach, dtype=dtype),
            log_units=None if fitting or not np.any(units) else torch.as_tensor(units, dtype=dtype),
        )
        return network.to(dtype)

    @contextlib.contextmanager
    def _unchanged_on_error(self):
        """Restore every attribute when the block raises: a failed call changes nothing.

        Fitted arrays are always replaced, never modified in place, so a shallow copy suffices.
        """
        state = self.__dict__.copy()
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(state)
            raise

    # -------------------------------------------------------------- predict

    @property
    def prototype_labels_(self):
        """Class of each prototype's largest logit; always in sync with ``logits_``."""
        return self._labels(self.logits_)

    def _labels(self, logits):
        return self.classes_[np.argmax(logits, axis=1)]

    def _model(self):
        """``prototypes_``, ``logits_`` and the reaches, read together (see ``_PATCHING``)."""
        with _PATCHING:
            return self.prototypes_, self.logits_, self._reach()

    def _reach(self):
        """``prototype_reach_``; all ``inf`` for a model from before reaches."""
        reach = getattr(self, "prototype_reach_", None)
        return np.full(len(self.prototypes_), np.inf) if reach is None else reach

    def _no_patches(self):
        return {
            "index": np.empty(0, dtype=np.int64),
            "label": self.classes_[:0].copy(),
            "radius": np.empty(0),
            "margin": np.empty(0),
            "replaced": np.empty(0, dtype=bool),
        }

    def _patch_log(self):
        """``patches_``; empty for a model from before the log."""
        log = getattr(self, "patches_", None)
        return self._no_patches() if log is None else log

    def _network(self, dtype, model=None):
        prototypes, logits, reach = self._model() if model is None else model
        attention, eps = self._fitted_attention()
        return self._build_network(
            self._encoded(prototypes),
            logits,
            dtype,
            self.power_,
            self.attention_params_,
            getattr(self, "feature_scales_", None),
            attention=attention,
            eps=eps,
            reach=reach,
        )

    def _validate_X(self, X):
        """A raw X checked and encoded for the network (in X's float dtype when every feature is
        numeric); infinite values are refused by :meth:`_in_chunks`, a chunk at a time."""
        check_is_fitted(self)
        X = _check_2d(X)
        validate_data(self, X, reset=False, skip_check_array=True)
        return self._encoded(X, [np.float64, np.float32], ensure_all_finite=False)

    @_compute.limit_threads
    def _in_chunks(self, X, what="logits", finish=None, model=None):
        """The network's ``what`` for an encoded X, in X's dtype, over row chunks passed through
        ``finish``, into one numpy array (float64 for floats): memory stays bounded by the chunk size.

        ``what`` is ``"logits"``, ``"weights"`` or a function ``(network, X_chunk) -> Tensor``. Each
        chunk is checked for infinite values (unless ``assume_finite``); chunks of logits take the CPU's
        fast path where there is one (:mod:`protoattn._fast`), except those with missing values.
        ``model``: the arrays ``(prototypes, logits, reach)`` to compute with (None: the fitted ones).
        """
        dtype = torch.float32 if X.dtype == np.float32 else torch.float64
        device = _compute.resolve_device(self.device, fitting=False)
        network = self._network(dtype, model).to(device)
        fast = _fast.predictor(network) if what == "logits" else None
        method = {"logits": network.forward, "weights": network.weights}.get(what) or (lambda x: what(network, x))

        def definition(rows):  # torch wraps only writable memory with positive strides: else a copy
            return method(torch.from_numpy(np.require(rows, requirements=["C", "W"])).to(device)).cpu().numpy()

        check = not get_config()["assume_finite"]  # scikit-learn's configuration is the calling thread's
        step = _chunk_rows(len(network.keys))

        def chunk(start):
            rows = X[start : start + step]
            rows = rows.toarray() if sp.issparse(rows) else rows  # a sparse X densified a chunk at a time
            part = None if fast is None else fast(rows)  # None for rows with NaN (or infinite) values
            with np.errstate(over="ignore"):  # a sum that overflows is checked by isinf
                if part is None and check and not math.isfinite(rows.sum()) and np.isinf(rows).any():
                    assert_all_finite(rows, estimator_name=type(self).__name__, input_name="X")
            with torch.inference_mode():
                part = definition(rows) if part is None else part
                if check:
                    part = self._finite_or_refused(part, rows, start, what, model)
            return part if finish is None else finish(part)

        first = chunk(0)  # its shape and dtype give the result's
        kind = np.float64 if np.issubdtype(first.dtype, np.floating) else first.dtype
        out = np.empty((X.shape[0], *first.shape[1:]), dtype=kind)
        out[: len(first)] = first

        for start in range(step, X.shape[0], step):
            part = chunk(start)
            out[start : start + len(part)] = part
        return out

    def _finite_or_refused(self, part, rows, start, what, model):
        """``part`` (a chunk's logits or weights) where every row is finite; otherwise float32 rows
        recomputed in float64, whose range is wider, and a ValueError for rows still not finite (the
        squares of values beyond about 1e154 overflow even float64: such rows would predict NaN)."""
        with np.errstate(over="ignore", invalid="ignore"):
            if math.isfinite(part.sum()) or np.isfinite(part).all():
                return part
        bad = ~np.isfinite(part).all(axis=1)
        if rows.dtype == np.float32:
            part = part.astype(np.float64)
            with config_context(assume_finite=True):  # rows already checked; the result is, below
                part[bad] = self._in_chunks(rows[bad].astype(np.float64), what, None, model)
            bad = ~np.isfinite(part).all(axis=1)
            if not bad.any():
                return part
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Cannot predict {int(bad.sum())} row(s) of X, the first row {start + first}: its values (up to "
            f"{float(np.abs(rows[first]).max()):.3g} in magnitude) are too large for this model, whose scores "
            "overflow even float64 there. Scale X as the training data were scaled (the same units, the same "
            "preprocessing)."
        )

    def _from_logits(self, X, finish):
        """``finish(logits)`` on each chunk's logits (a numpy array in X's dtype)."""
        return self._in_chunks(self._validate_X(X), "logits", finish)

    def decision_function(self, X):
        """Class logits ``Σ_i a_i(x) logits_[i]``; for two classes, the logit difference (n_samples,)."""
        check_is_fitted(self)
        if len(self.classes_) == 2:
            return self._from_logits(X, lambda logits: logits[:, 1] - logits[:, 0])
        return self._from_logits(X, None)

    def predict(self, X):
        """Predicted class labels."""
        indices = self._from_logits(X, lambda logits: logits.argmax(1))
        return self.classes_[indices]

    def predict_proba(self, X):
        """Class probabilities, ``softmax`` of the logits."""
        return self._from_logits(X, _softmax)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`, computed stably."""
        return self._from_logits(X, lambda logits: log_softmax(logits.astype(np.float64), axis=1))

    # -------------------------------------------------------------- inspect

    def attention_weights(self, X):
        """Attention weights of each sample over the prototypes, shape (n_samples, m).

        Rows sum to 1, and ``softmax(attention_weights(X) @ logits_)`` equals ``predict_proba(X)``.
        With ``attention="relu"`` the model is not an attention model: these are the hidden ReLU
        activations (rows do not sum to 1), and a warning says so.
        """
        check_is_fitted(self)
        attention = self._fitted_attention()[0]
        if isinstance(attention, str) and attention in SOFTMAX_FREE:
            warnings.warn(
                'attention="relu" is the fully-connected ReLU baseline, not attention: the returned '
                "weights are ReLU activations and their rows do not sum to 1.",
                UserWarning,
                stacklevel=2,
            )
        return self._in_chunks(self._validate_X(X), "weights")

    def prototypes_frame(self):
        """The prototypes as a :class:`pandas.DataFrame`: one row each, the features as columns in the
        user's units and categories, then ``label`` (``prototype_labels_``) and ``patched``
        (``patched_prototypes_``)."""
        import pandas as pd

        check_is_fitted(self)
        with _PATCHING:
            prototypes, logits, patched = self.prototypes_, self.logits_, self.patched_prototypes_
        frame = pd.DataFrame(prototypes, columns=self._feature_names()).infer_objects()
        return frame.assign(label=self._labels(logits), patched=patched)

    def _feature_names(self):
        default = np.array([f"x{j}" for j in range(self.n_features_in_)], dtype=object)
        return getattr(self, "feature_names_in_", default)

    def explain(self, X, top_k=3):
        """The ``top_k`` prototypes behind each prediction, with weights and contributions.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            As for :meth:`predict`.
        top_k : int, default=3
            Prototypes to report per sample (at most m).

        Returns
        -------
        Explanation
            See :class:`protoattn.Explanation`: ``to_frame()`` gives a table of the prototypes,
            ``feature_frame(i)`` the features behind sample i's closeness to its first prototype.
        """
        if not isinstance(top_k, Integral) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        index = np.asarray(X.index) if hasattr(X, "index") and hasattr(X, "columns") else None
        X = self._validate_X(X)
        X = X.toarray() if sp.issparse(X) else X
        model = self._model()  # one model for every chunk, whatever a patch does meanwhile
        prototypes = model[0]
        n, k = len(X), min(int(top_k), len(prototypes))
        explanation = Explanation(
            predicted=np.empty(n, dtype=self.classes_.dtype),
            logit=np.empty(n),
            prototype_indices=np.empty((n, k), dtype=np.intp),
            prototype_labels=np.empty((n, k), dtype=self.classes_.dtype),
            weights=np.empty((n, k)),
            contributions=np.empty((n, k)),
            feature_terms=np.empty((n, k, self.n_features_in_)),
            samples=_tables.decode(X, self.is_categorical_, self.categories_),
            prototypes=prototypes,
            feature_names=self._feature_names(),
            index=np.arange(n) if index is None else index,
        )
        # In row chunks, filled in place: memory grows with n * top_k, not with n * n_prototypes. A
        # chunk holds about four (rows, m) arrays at once (weights, contributions, their order, a sort
        # key), so it has a quarter of prediction's rows.
        rows = max(1, _chunk_rows(len(prototypes)) // 4)
        for start in range(0, n, rows):
            self._explain_rows(X[start : start + rows], explanation, slice(start, start + rows), model)
        return explanation

    def _explain_rows(self, X, out, rows, model):
        logits = model[1]
        weights = self._in_chunks(X, "weights", None, model)
        predicted = np.argmax(weights @ logits, axis=1)
        contributions = weights * logits[:, predicted].T
        order = np.argsort(-contributions, axis=1, kind="stable")[:, : out.weights.shape[1]]
        out.predicted[rows] = self.classes_[predicted]
        out.logit[rows] = contributions.sum(axis=1)
        out.prototype_indices[rows] = order
        out.prototype_labels[rows] = self._labels(logits)[order]
        out.weights[rows] = np.take_along_axis(weights, order, axis=1)
        out.contributions[rows] = np.take_along_axis(contributions, order, axis=1)
        terms = self._in_chunks(X, lambda network, x: network.feature_terms(x, torch.as_tensor(order)), None, model)
        out.feature_terms[rows] = terms

    # ---------------------------------------------------------------- patch

    def add_prototype(self, x, y, *, margin=1.0, radius="auto", replace=None):
        """Insert a prototype at ``x`` that makes the model predict ``y`` there, and changes nothing
        beyond ``radius``.

        The new prototype's value row is ``η e_y``: η on class y, 0 elsewhere. With normalised
        weights the logits anywhere become ``(1 - β) l + β η e_y``, ``β`` the new prototype's weight
        there and ``l`` the logits before, so every class but y is scaled by the same factor: a
        prediction can only stay as it was or become y. η is solved in closed form from β at x so
        that y leads every other class there by ``margin``.

        The prototype gets the reach ``radius`` (``prototype_reach_``): beyond it its weight is
        exactly 0, so no prediction farther than ``radius`` from x changes, by construction rather
        than by sampling. The distance is the model's own: the learned metric on standardised
        features, ``‖s ∘ (z_x - z_k)‖`` with ``z`` the standardised values and ``s``
        ``feature_scales_``, whose squared terms :attr:`Explanation.feature_terms` decomposes
        (:meth:`preview_patch` reports every row's). :meth:`preview_patch` with the same arguments
        lists exactly the rows of a data set whose prediction this call changes.

        Parameters
        ----------
        x : array-like of shape (n_features,) or (1, n_features)
            Where to patch. Missing values are taken from the prototype x attends to most.
        y : label
            One of ``classes_``.
        margin : float, default=1.0
            Required logit margin of class y over the runner-up at x, at most ``MAX_MARGIN`` (40):
            beyond it the probability of y at x is 1 to double precision, and a larger margin would
            only move the predictions elsewhere.
        radius : float, "auto" or None, default="auto"
            The patch's reach in the model's distance. ``"auto"``: half the distance from x to the
            nearest prototype of another class (not counting one at x itself; ``inf`` when there is
            none), so that the patch takes none of another class's prototypes' own places. None:
            unbounded (every prediction may move toward y, as the weight of an inverse distance is
            positive everywhere). A radius exists for the distance
            scores (``idw``, ``inv_dist``, ``neg_dist``, ``gaussian``) and the learned ``kernel``;
            for the others (``dot``, ``cosine``, ``expressive``, ``relu``, a function) ``"auto"``
            means None and a number is refused.
        replace : int or None, default=None
            Overwrite prototype ``replace`` instead of adding a new one. Its old influence goes too:
            rows within its reach (everywhere, for a trained prototype) can change as well.

        Returns
        -------
        index : int
            Row of the new prototype in ``prototypes_``.

        Raises
        ------
        ValueError
            When the patch cannot make y lead at x (the new prototype's weight at x is too small), when
            ``radius`` is given for a score without a distance, or when ``replace`` would leave no
            prototype of infinite reach (then some rows would have no weight at all).
        """
        check_is_fitted(self)
        x = self._validate_one_sample(x)
        label = self._class_index(y)
        _check_margin(margin)
        with _PATCHING:  # from the model it reads to the one it writes (see _PATCHING)
            patch = self._plan_patch(x, label, margin, radius, replace, self._model())
            (self.prototypes_, self.logits_, self.prototype_reach_) = patch.model
            self.patched_prototypes_, self.patches_ = patch.patched, patch.patches
            return patch.index

    def preview_patch(self, x, y, X, *, margin=1.0, radius="auto", replace=None):
        """What :meth:`add_prototype` with the same arguments would change on the rows of X, without
        changing the model.

        Parameters
        ----------
        x, y, margin, radius, replace
            As for :meth:`add_prototype`.
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Rows to check, as for :meth:`predict`.

        Returns
        -------
        PatchReport
            ``changed`` (the positions of the rows whose prediction would change), ``before`` and
            ``after`` (their predictions), ``distances`` (every row's distance from x in the model's
            distance), ``radius`` (the one used). ``to_frame()`` gives a table.

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = IDWAttentionClassifier(n_prototypes=6, random_state=0).fit(X, y)
        >>> report = clf.preview_patch(X[70], 2, X)
        >>> bool(set(report.after) <= {2}), bool((report.distances[report.changed] <= report.radius).all())
        (True, True)
        """
        check_is_fitted(self)
        x = self._validate_one_sample(x)
        label = self._class_index(y)
        _check_margin(margin)
        index = np.asarray(X.index) if hasattr(X, "index") and hasattr(X, "columns") else None
        rows = self._validate_X(X)
        with _PATCHING:
            current = self._model()
            patch = self._plan_patch(x, label, margin, radius, replace, current)
        before = self._in_chunks(rows, "logits", lambda logits: logits.argmax(1), current)
        after = self._in_chunks(rows, "logits", lambda logits: logits.argmax(1), patch.model)
        column = patch.index

        def distances(network, chunk):
            return squared_distances(*network.scaled(chunk))[:, column]

        squared = self._in_chunks(rows, distances, None, patch.model)
        changed = np.flatnonzero(before != after)
        return PatchReport(
            changed=changed,
            before=self.classes_[before[changed]],
            after=self.classes_[after[changed]],
            distances=np.sqrt(squared),
            radius=float(patch.radius),
            label=self.classes_[label],
            index=np.arange(rows.shape[0]) if index is None else index,
        )

    def _plan_patch(self, x, label, margin, radius, replace, current):
        """The model after the patch, from the ``current`` arrays ``(prototypes, logits, reach)``."""
        old_prototypes, old_logits, old_reach = current
        m = len(old_prototypes)
        if replace is not None and (
            not isinstance(replace, Integral) or isinstance(replace, bool) or not 0 <= replace < m
        ):
            raise ValueError(f"replace must be None or a prototype index in [0, {m}), got {replace!r}.")
        index = m if replace is None else int(replace)
        if np.isnan(x).all():
            raise ValueError("x has no observed feature: a prototype needs at least one value to sit at.")
        radius = self._resolve_radius(radius, x, label, current, index)
        # Missing cells of x are taken from the prototype it attends to most: prototypes are complete.
        nearest = np.argmax(self._in_chunks(x, "weights", None, current)[0])
        filled = np.where(np.isnan(x), self._encoded(old_prototypes[nearest : nearest + 1]), x)
        row = _tables.decode(filled, self.is_categorical_, self.categories_)
        added = 1 if replace is None else 0
        prototypes = np.concatenate([old_prototypes, row]) if added else old_prototypes.copy()
        logits = np.concatenate([old_logits, np.empty((added, len(self.classes_)))])
        reach = np.concatenate([old_reach, np.empty(added)])
        prototypes[index], logits[index], reach[index] = row[0], 0.0, radius
        if not np.isinf(reach).any():
            raise ValueError(
                f"Cannot replace prototype {index}: it is the last prototype of infinite reach, and beyond "
                "every patch's radius some rows would have no attention weight at all."
            )
        model = (prototypes, logits, reach)
        weights = self._in_chunks(x, "weights", None, model)[0]
        beta = weights[index]
        # The new value row is still 0: these are (1 - β) l, and β η e_y is added to them.
        scaled = weights @ logits
        gap = scaled[label] - np.max(np.delete(scaled, label))
        eta = max(0.0, margin - gap) / beta if beta > 0 else math.inf
        if not math.isfinite(eta):
            raise ValueError(
                f"Cannot patch: the new prototype gets attention weight {beta:.3g} at x under "
                f"attention={self._fitted_attention()[0]!r}, too small to move the prediction there."
            )
        logits[index, label] = eta
        after = self._in_chunks(x, "logits", None, model)[0]
        if np.argmax(after) != label:
            raise ValueError("Cannot patch: rounding left x misclassified; use a larger margin.")
        patched = np.append(self.patched_prototypes_, False) if added else self.patched_prototypes_.copy()
        patched[index] = True
        log = self._patch_log()
        keep = log["index"] != index  # the patch that placed a replaced prototype is gone with it
        entry = {
            "index": np.array([index], dtype=np.int64),
            "label": self.classes_[label : label + 1],
            "radius": np.array([radius]),
            "margin": np.array([float(margin)]),
            "replaced": np.array([replace is not None]),
        }
        patches = {name: np.concatenate([log[name][keep], entry[name]]) for name in entry}
        return _Patch(model=model, patched=patched, patches=patches, index=index, radius=radius)

    def _resolve_radius(self, radius, x, label, current, index):
        """``radius`` as a float (``inf``: unbounded), ``"auto"`` resolved at x."""
        attention = self._fitted_attention()[0]
        bounded = isinstance(attention, str) and attention in BOUNDED_ATTENTIONS
        if radius is None or (isinstance(radius, str) and radius == "auto" and not bounded):
            return math.inf
        if isinstance(radius, str):
            if radius != "auto":
                raise ValueError(f'radius must be a positive number, "auto" or None, got {radius!r}.')
            distances = np.sqrt(self._squared_distances(x, current)[0])
            others = self._labels(current[1]) != self.classes_[label]
            if index < len(others):
                others[index] = False  # a replaced prototype is not a neighbour
            # A prototype of another class at x itself (distance 0) is overruled there whatever the radius.
            others &= distances > 0
            return 0.5 * float(distances[others].min()) if others.any() else math.inf
        if not isinstance(radius, Real) or isinstance(radius, bool) or not radius > 0:
            raise ValueError(f'radius must be a positive number, "auto" or None, got {radius!r}.')
        if not bounded:
            raise ValueError(
                f"radius={radius!r} needs a score built on distances, and attention={attention!r} has none: "
                f"a patch can be bounded only under {sorted(BOUNDED_ATTENTIONS)}. Pass radius=None "
                "(unbounded: every prediction may move toward y)."
            )
        return float(radius)

    def _squared_distances(self, X, model=None):
        """Squared distances of the rows of an encoded X to every prototype in the model's distance
        (the learned metric on standardised features), shape (n, m)."""
        return self._in_chunks(X, lambda network, rows: squared_distances(*network.scaled(rows)), None, model)

    def remove_prototypes(self, indices):
        """Delete prototypes by index (at least one must remain, and one of infinite reach; none is
        a no-op). ``patches_`` forgets the removed patches and renumbers the others. Returns self."""
        check_is_fitted(self)
        with _PATCHING:  # see _PATCHING
            m = len(self.prototypes_)
            idx = np.asarray(indices)
            if idx.ndim == 0:
                idx = idx.reshape(1)
            if idx.ndim == 1 and idx.size == 0:  # nothing to remove (np.asarray([]) is float64)
                return self
            if idx.dtype.kind not in "iu" or idx.ndim != 1:
                raise TypeError(f"indices must be integers or a 1-D array of integers, got {indices!r}.")
            if np.any((idx < 0) | (idx >= m)) or len(np.unique(idx)) != len(idx):
                raise ValueError(f"indices must be distinct prototype indices in [0, {m}), got {indices!r}.")
            if len(idx) >= m:
                raise ValueError(f"Cannot remove all {m} prototypes: at least one must remain.")
            keep = np.setdiff1d(np.arange(m), idx)
            reach = self._reach()
            if not np.isinf(reach[keep]).any():
                raise ValueError(
                    "Cannot remove every prototype of infinite reach: beyond the patches' radii some rows "
                    "would have no attention weight at all."
                )
            log = self._patch_log()
            kept = np.isin(log["index"], keep)
            new_index = np.full(m, -1, dtype=np.int64)
            new_index[keep] = np.arange(len(keep))
            patches = {name: values[kept] for name, values in log.items()}
            patches["index"] = new_index[patches["index"]]
            self.prototypes_, self.logits_ = self.prototypes_[keep], self.logits_[keep]
            self.prototype_reach_, self.patches_ = reach[keep], patches
            self.patched_prototypes_ = self.patched_prototypes_[keep]
        return self

    def _validate_one_sample(self, x):
        if hasattr(x, "to_frame") and getattr(x, "ndim", 0) == 1:
            x = x.to_frame().T  # a pandas Series: one row with its feature names
        elif np.ndim(x) == 1:
            x = np.reshape(x if isinstance(x, np.ndarray) else np.asarray(x, dtype=object), (1, -1))
        if np.ndim(x) != 2 or np.shape(x)[0] != 1:
            raise ValueError(f"x must be one sample of {self.n_features_in_} features, got shape {np.shape(x)}.")
        validate_data(self, x, reset=False, skip_check_array=True)
        x = self._encoded(x)
        return x.toarray() if sp.issparse(x) else x

    def _class_index(self, y):
        if np.ndim(y) != 0:
            raise ValueError(f"y must be a single label, got {y!r}.")
        hits = [i for i, c in enumerate(self.classes_) if c == y]
        if not hits:
            raise ValueError(f"Unknown label {y!r}: expected one of {list(self.classes_)}.")
        return hits[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.input_tags.sparse = True  # densified: for training at once, for prediction a chunk at a time
        return tags

    # -------------------------------------------------------------- persist

    def save(self, path):
        """Save the fitted model to a file that holds only data: arrays and JSON, no pickle.

        Loading a pickle (or joblib) file runs code named in it; loading this file with :meth:`load`
        runs nothing from it, so a model from someone else is safe to open. The file records the
        hyperparameters, every fitted attribute, the classes, feature names and the protoattn
        version, with a SHA-256 of each part.

        Parameters
        ----------
        path : str, path-like or writable binary file object
            Where to write. An existing file is replaced only once the new one is complete, and
            keeps its permissions; a symbolic link is written through (it keeps pointing at the
            model).

        Raises
        ------
        TypeError
            When ``attention`` is a Python function (code cannot be saved as data), or an attribute
            holds values other than numbers, strings and arrays of them.
        ValueError
            When the model is beyond the limits that :meth:`load` accepts (a file of 1 GiB).

        Examples
        --------
        >>> import os, tempfile
        >>> from sklearn.datasets import load_iris
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
        >>> path = os.path.join(tempfile.mkdtemp(), "iris.protoattn")
        >>> clf.save(path)
        >>> same = IDWAttentionClassifier.load(path)
        >>> bool((same.predict_proba(X) == clf.predict_proba(X)).all())
        True
        """
        _persistence.save(self, path)

    @classmethod
    def load(cls, path):
        """Load a model written by :meth:`save`, executing nothing from the file.

        Every array's SHA-256, dtype, shape and finiteness, every fitted attribute's type and the
        hyperparameters are checked before the model is returned, and the model must predict
        finite values at its prototypes. The work is bounded before it starts: only a regular file
        of at most 1 GiB is read (a FIFO or a device is refused at once), and its directory and
        metadata are checked before any array is read (see README, "Saving and sharing models").

        Parameters
        ----------
        path : str, path-like or readable binary file object

        Returns
        -------
        IDWAttentionClassifier

        Raises
        ------
        ValueError
            When the file is not a regular file, not a protoattn model file, beyond the limits, or
            truncated, corrupted or edited.

        Warns
        -----
        InconsistentVersionWarning
            When another protoattn version saved the model.
        """
        return _persistence.load(cls, path)

    def __getstate__(self):
        # Recorded so that unpickling under another protoattn version warns.
        return dict(super().__getstate__(), _protoattn_version=_persistence.library_version())

    def __setstate__(self, state):
        state = dict(state)
        _persistence.warn_if_other_version(type(self).__name__, state.pop("_protoattn_version", "unknown"))
        super().__setstate__(state)


def _softmax(logits):
    """Softmax over the classes, in float64. Each row's maximum is subtracted only when some logit
    is beyond ±40, where float32's exponential could overflow: logits are averages of rows of
    ``logits_``, so nearly never (and the row maxima of a few columns are slow to take)."""
    if np.abs(logits).max() > 40.0:
        logits = logits - logits.max(1, keepdims=True)
    p = np.exp(logits).astype(np.float64, copy=False)
    p /= p.sum(1, keepdims=True)
    return p


def _check_margin(margin):
    if not isinstance(margin, Real) or isinstance(margin, bool) or not (0 < margin <= MAX_MARGIN):
        raise ValueError(
            f"margin must be a positive number of at most {MAX_MARGIN:g}, got {margin!r}: a logit margin of "
            f"{MAX_MARGIN:g} already makes the probability of y at x 1 to double precision, and a larger "
            "one only changes predictions elsewhere."
        )


def _check_2d(X):
    """X as a DataFrame, sparse matrix or array (an object array for lists, whose columns may mix
    numbers and categories), with scikit-learn's error when it is not 2-D."""
    if hasattr(X, "columns") or sp.issparse(X):
        return X
    X = X if isinstance(X, np.ndarray) or hasattr(X, "__array__") else np.asarray(X, dtype=object)
    X = np.asarray(X)
    if X.ndim != 2:
        check_array(X, dtype=None, ensure_all_finite=False)
    return X


def _check_class_weight(class_weight):
    """Refuse class weights that sample_weight would refuse: negative, NaN or infinite ones."""
    if not isinstance(class_weight, dict):
        return
    for label, weight in class_weight.items():
        if not isinstance(weight, Real) or isinstance(weight, bool) or not 0 <= weight < math.inf:
            raise ValueError(
                f"class_weight[{label!r}] = {weight!r}: class weights must be non-negative finite numbers, "
                "like sample_weight."
            )


def _check_trainable_scale(low, high, means, stds):
    # Training runs in float32, where squared distances of the standardised rows, at most
    # n_features * (2 max|z|)^2, must fit; from each numeric column's range, which holds its extremes.
    with np.errstate(over="ignore", invalid="ignore"):
        largest = float(np.max(np.maximum(np.abs(low - means), np.abs(high - means)) / stds, initial=0.0))
    if not 2 * largest * math.sqrt(max(len(means), 1)) < math.sqrt(np.finfo(np.float32).max):
        raise ValueError(
            f"X has values too large for training: {largest:.3g} standard deviations of the training data from "
            "its mean, where squared distances overflow float32 (or the standard deviation itself overflows). "
            "Rescale those columns, or remove such outliers."
        )


# ------------------------------------------------------------ pipelines


def explain(model, X, top_k=3):
    """:meth:`IDWAttentionClassifier.explain` for a fitted classifier or a fitted
    :class:`~sklearn.pipeline.Pipeline` whose last step is one: X goes through the earlier steps, and
    the explanation shows the samples and the prototypes in X's units (through the earlier steps'
    ``inverse_transform``) where every step has one and keeps the number of features; else as the
    classifier sees them."""
    clf, before = _pipeline_parts(model)
    why = clf.explain(X if before is None else before.transform(X), top_k)
    shown = _in_input_units(clf, before)
    if shown is clf or shown.prototypes_.shape[1] != why.feature_terms.shape[2]:
        return why
    samples = np.asarray(X, dtype=object) if hasattr(X, "columns") else np.asarray(X)
    index = np.asarray(X.index) if hasattr(X, "columns") else why.index
    return dataclasses.replace(
        why, samples=samples, prototypes=shown.prototypes_, feature_names=shown._feature_names(), index=index
    )


def attention_weights(model, X):
    """:meth:`IDWAttentionClassifier.attention_weights` for a fitted classifier or a fitted Pipeline
    whose last step is one (X goes through the earlier steps)."""
    clf, before = _pipeline_parts(model)
    return clf.attention_weights(X if before is None else before.transform(X))


def _pipeline_parts(model):
    """The classifier of ``model`` (itself, or a fitted Pipeline's last step) and the steps before it
    (None for a classifier)."""
    from sklearn.pipeline import Pipeline

    clf, before = (model.steps[-1][1], model[:-1]) if isinstance(model, Pipeline) else (model, None)
    if not isinstance(clf, IDWAttentionClassifier):
        raise TypeError(
            "Expected a fitted IDWAttentionClassifier or a Pipeline whose last step is one, "
            f"got {type(model).__name__}."
        )
    check_is_fitted(clf)
    return clf, before


def _in_input_units(clf, before):
    """A shallow copy of the classifier whose prototypes are in the pipeline's input units, through
    the earlier steps' ``inverse_transform``; the classifier itself when there is no way back."""
    if before is None or not hasattr(before, "inverse_transform"):
        return clf
    try:
        prototypes = np.asarray(before.inverse_transform(clf.prototypes_))
    except (ValueError, TypeError, AttributeError):  # a step whose inverse needs other input
        return clf
    shown = copy.copy(clf)
    shown.prototypes_, shown.n_features_in_ = prototypes, prototypes.shape[1]
    names = getattr(before, "feature_names_in_", None)
    if names is not None and len(names) == prototypes.shape[1]:
        shown.feature_names_in_ = names
    elif hasattr(shown, "feature_names_in_"):
        del shown.feature_names_in_
    return shown
