"""The scikit-learn estimator: validation, fit/predict, prototypes, explanations and patches."""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import log_softmax
from sklearn import config_context, get_config
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import assert_all_finite, check_random_state, compute_sample_weight
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from torch import nn

from . import _compute, _fast, _persistence, _training
from ._network import PrototypeAttention
from .attention import ATTENTIONS, SOFTMAX_FREE

#: Scores built on distances, where ``power`` means something and is annealed from 2 in training.
DISTANCE_ATTENTIONS = frozenset({"idw", "inv_dist", "neg_dist", "gaussian"})

#: The largest ``margin`` of :meth:`IDWAttentionClassifier.add_prototype`: softmax gives the class a
#: probability of ``1 - e^-40``, 1 in float64, so a larger margin changes nothing at x and only moves the
#: predictions around it (a margin of 1e6 changed 98 of iris's 150).
MAX_MARGIN = 40.0

# Rows per chunk in prediction: each (rows, m) buffer holds about 2 MB, large enough that per-chunk
# overheads vanish and small enough that the passes over it stay in the cache; memory beyond the
# output is then bounded whatever the rows.
_CHUNK_BYTES = 2**21


def _chunk_rows(m, dtype):
    """Rows per prediction chunk for m prototypes computing in ``dtype``."""
    return max(1, _CHUNK_BYTES // (m * np.dtype(dtype).itemsize))


# add_prototype and remove_prototypes replace prototypes_, logits_ and patched_prototypes_ together,
# holding this lock; predictions read prototypes_ and logits_ under it (see _model), so one that
# runs beside a patch uses the model wholly before or wholly after it. Re-entrant: add_prototype
# predicts at x while it holds the lock. One for all estimators: it is held for microseconds to read,
# milliseconds to patch.
_PATCHING = threading.RLock()


@dataclass(frozen=True)
class Explanation:
    """Why each sample got its prediction: the ``top_k`` prototypes that contribute most.

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
    """

    predicted: np.ndarray
    logit: np.ndarray
    prototype_indices: np.ndarray
    prototype_labels: np.ndarray
    weights: np.ndarray
    contributions: np.ndarray

    def to_frame(self):
        """One row per (sample, rank) as a :class:`pandas.DataFrame` (requires pandas)."""
        import pandas as pd

        n, k = self.prototype_indices.shape
        return pd.DataFrame(
            {
                "sample": np.repeat(np.arange(n), k),
                "rank": np.tile(np.arange(1, k + 1), n),
                "predicted": np.repeat(self.predicted, k),
                "prototype": self.prototype_indices.ravel(),
                "prototype_label": self.prototype_labels.ravel(),
                "weight": self.weights.ravel(),
                "contribution": self.contributions.ravel(),
            }
        )


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
        The exponent p on distances. ``"auto"`` is ``2 * round(sqrt(n_features))`` for ``"idw"`` and 2
        for the other scores: IDW weights must sharpen as distances concentrate with the dimension.
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
        The keys, in input space.
    logits_ : ndarray of shape (m, n_classes)
        The values: each prototype's class logits.
    prototype_labels_ : ndarray of shape (m,)
        Class of each prototype's largest logit.
    patched_prototypes_ : ndarray of bool of shape (m,)
        True for the prototypes placed by :meth:`add_prototype` rather than by training.
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

    _parameter_constraints: dict = {
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
        n_prototypes=None,
        attention="idw",
        power="auto",
        eps=1e-3,
        metric="diagonal",
        init="kmeans",
        max_epochs=100,
        batch_size="auto",
        learning_rate=0.1,
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
        self.n_prototypes = n_prototypes
        self.attention = attention
        self.power = power
        self.eps = eps
        self.metric = metric
        self.init = init
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
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
        X : array-like of shape (n_samples, n_features)
            Training data (dense, finite).
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
            with _numeric("X"):
                X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
            _check_trainable_scale(X)
            check_classification_targets(y)
            classes, y_codes = np.unique(y, return_inverse=True)
            sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
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
            warm = self.warm_start and self._fitted_like(classes, X.shape[1])
            self.classes_ = classes
            self._fit_network(X, y_codes, sample_weight, check_random_state(self.random_state), warm)
        return self

    def _fitted_like(self, classes, n_features):
        return (
            hasattr(self, "prototypes_")
            and self.prototypes_.shape[1] == n_features
            and np.array_equal(self.classes_, classes)
        )

    def _fit_network(self, X, y, weight, rng, warm=False):
        device = _compute.resolve_device(self.device, fitting=True)
        n_classes = len(self.classes_)
        if warm:
            keys, values = self.prototypes_, self.logits_
        elif self.init == "kmeans":
            per_class = self.n_prototypes or 10 * n_classes
            counts = _training.prototypes_per_class(np.bincount(y, minlength=n_classes), per_class)
            keys, values = _training.kmeans_prototypes(X, y, weight, counts, n_classes, rng)
        else:
            n_prototypes = self.n_prototypes or 10 * n_classes
            keys, values = _training.random_prototypes(X, weight, n_prototypes, n_classes, rng)
        power = self._resolve_power(X.shape[1])
        attention_params, scales = (self.attention_params_, self.feature_scales_) if warm else (None, None)
        network = self._build_network(keys, values, torch.float32, power, attention_params, scales, fitting=True)
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
            self._pending_prototypes = np.zeros(n_classes, dtype=np.intp)
        self.n_iter_ = result.n_iter
        self.loss_curve_ = result.loss_curve
        self.validation_scores_ = result.validation_scores if self.early_stopping else None
        self.best_validation_score_ = result.best_validation_score

    def _set_trained(self, network, power, result):
        """Copy a trained network (on any device) into the numpy fitted state, with what resumes training."""
        self.prototypes_ = network.keys.detach().cpu().numpy().astype(np.float64)
        self.logits_ = network.values.detach().cpu().numpy().astype(np.float64)
        self.attention_params_ = (
            {name: p.detach().cpu().numpy().astype(np.float64) for name, p in network.score.named_parameters()}
            if isinstance(network.score, nn.Module)
            else {}
        )
        self.feature_scales_ = (
            np.ones(network.keys.shape[1])
            if network.log_scales is None
            else network.log_scales.detach().exp().cpu().numpy().astype(np.float64)
        )
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
        the keys' learning rate keeps the scale of the first rows that had a spread.
        ``n_iter_`` counts the passes and ``loss_curve_`` holds each pass's loss; ``max_epochs``,
        ``early_stopping`` and ``n_iter_no_change`` play no part.

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
            with _numeric("X"):
                X, y = validate_data(self, X, y, reset=first, dtype=[np.float64, np.float32])
            _check_trainable_scale(X)
            check_classification_targets(y)
            classes = self._stream_classes(classes, first)
            known = np.isin(y, classes)
            if not known.all():
                raise ValueError(
                    f"y holds labels {np.unique(y[~known]).tolist()} that are not in classes "
                    f"{classes.tolist()}: pass every label of the stream on the first call to partial_fit."
                )
            y_codes = np.searchsorted(classes, y)
            sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
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
        self.prototypes_, self.logits_ = np.empty((0, X.shape[1])), np.empty((0, n_classes))
        self._pending_prototypes = _training.prototypes_per_class(np.full(n_classes, n_prototypes), n_prototypes)
        if self.init == "random":
            self.prototypes_, self.logits_ = _training.random_prototypes(X, weight, n_prototypes, n_classes, rng)
            self._pending_prototypes = np.zeros(n_classes, dtype=np.intp)
        self.patched_prototypes_ = np.zeros(len(self.prototypes_), dtype=bool)
        self.attention_params_ = {}
        self.feature_scales_ = np.ones(X.shape[1])
        self.power_ = self._resolve_power(X.shape[1])
        self.n_iter_, self.loss_curve_ = 0, []
        self.validation_scores_ = self.best_validation_score_ = None
        self._spread, self._optimizer_state = 0.0, {}

    def _place_owed_prototypes(self, X, y, weight, rng):
        """Add the k-means prototypes still owed to each class, from this call's rows of that class."""
        counts = np.minimum(self._pending_prototypes, np.bincount(y, minlength=len(self.classes_)))
        if not counts.any():
            return
        rows = counts[y] > 0
        keys, values = _training.kmeans_prototypes(X[rows], y[rows], weight[rows], counts, len(self.classes_), rng)
        self.prototypes_ = np.concatenate([self.prototypes_, keys])
        self.logits_ = np.concatenate([self.logits_, values])
        self.patched_prototypes_ = np.concatenate([self.patched_prototypes_, np.zeros(len(keys), dtype=bool)])
        self._pending_prototypes = self._pending_prototypes - counts

    def _stream_pass(self, X, y, weight, device, rng):
        network = self._build_network(
            self.prototypes_,
            self.logits_,
            torch.float32,
            self.power_,
            self.attention_params_,
            self.feature_scales_,
            fitting=True,
        )
        result = self._train(network, X, y, weight, rng, device, 1, lambda epoch: self.power_, stream=True)
        self.n_iter_ += result.n_iter
        self.loss_curve_ = [*self.loss_curve_, *result.loss_curve]

    def _train(self, network, X, y, weight, rng, device, max_epochs, power_schedule, validation=None, stream=False):
        """Train the network on the rows and copy it into the fitted attributes: what :meth:`fit` and
        :meth:`partial_fit` share. A ``stream`` pass continues the learning rate's scale and Adam's
        moments of the calls before, at a constant learning rate."""
        seed = int(rng.randint(2**31 - 1)) + (self.n_iter_ if stream else 0)  # each pass its own shuffle
        result = _training.train(
            network.to(device),
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
        )
        self._set_trained(network, power_schedule(max_epochs), result)  # the final power, however training ended
        return result

    def _attention_name(self):
        return self.attention if isinstance(self.attention, str) else None

    def _fitted_attention(self):
        """The fitted score and eps; the parameters for a model fitted before protoattn kept them."""
        return getattr(self, "attention_", self.attention), getattr(self, "eps_", self.eps)

    def _resolve_power(self, n_features):
        if self.power != "auto":
            return float(self.power)
        if self.attention != "idw":
            return 2.0
        # An even integer, so that the weights need no logarithm (see attention.idw_weights).
        return 2.0 * max(round(math.sqrt(n_features)), 1)

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
    ):
        """The torch network of these arrays; ``fitting`` makes the metric's scales trainable
        (with ``metric="diagonal"``), else they are constants, left out when all 1. ``attention``
        and ``eps`` default to the parameters (training); prediction passes the fitted ones."""
        attention = self.attention if attention is None else attention
        eps = self.eps if eps is None else eps
        learn_scales = fitting and self.metric == "diagonal"
        log_scales = None
        if learn_scales or (feature_scales is not None and np.any(feature_scales != 1)):
            log_scales = torch.log(
                torch.as_tensor(np.ones(keys.shape[1]) if feature_scales is None else feature_scales)
            )
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
            log_scales=None if log_scales is None else log_scales.to(dtype),
            learn_scales=learn_scales,
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
        """``prototypes_`` and ``logits_``, read together (see ``_PATCHING``)."""
        with _PATCHING:
            return self.prototypes_, self.logits_

    def _network(self, dtype, prototypes=None, logits=None):
        if prototypes is None:
            prototypes, logits = self._model()
        attention, eps = self._fitted_attention()
        return self._build_network(
            prototypes,
            logits,
            dtype,
            self.power_,
            self.attention_params_,
            getattr(self, "feature_scales_", None),
            attention=attention,
            eps=eps,
        )

    def _validate_X(self, X):
        """X checked and converted for prediction, except for infinite and missing values, which
        :meth:`_in_chunks` (where every validated X goes) rejects a chunk at a time."""
        check_is_fitted(self)
        with _numeric("X"):
            X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], ensure_all_finite=False)
        return _with_positive_strides(X)

    @_compute.limit_threads
    def _in_chunks(self, X, what="logits", finish=None, prototypes=None, logits=None):
        """The network's ``what`` (``"logits"`` or ``"weights"``) for a validated X, computed over
        row chunks and passed through ``finish`` chunk by chunk, into one numpy array (float64 for
        floating results): memory stays bounded by the chunk size.

        The network computes in X's dtype, like scikit-learn's estimators. Each chunk is checked for
        infinite and missing values with scikit-learn's error (unless ``assume_finite``) just before
        it is used, while it is in the cache.
        """
        dtype = torch.float32 if X.dtype == np.float32 else torch.float64
        device = _compute.resolve_device(self.device, fitting=False)
        network = self._network(dtype, prototypes, logits).to(device)
        compute = _fast.predictor(network) if what == "logits" else None
        if compute is None:
            method = network.forward if what == "logits" else network.weights

            def compute(rows):  # torch refuses to wrap read-only memory (pandas, memmaps): copied
                return method(torch.from_numpy(np.require(rows, requirements="W")).to(device)).cpu().numpy()

        check = not get_config()["assume_finite"]
        step = _chunk_rows(len(network.keys), X.dtype)
        out = None
        with torch.inference_mode():
            for start in range(0, len(X), step):
                rows = X[start : start + step]
                with np.errstate(over="ignore"):  # a sum that overflows is checked by sklearn below
                    finite = math.isfinite(rows.sum())
                if check and not finite:
                    assert_all_finite(rows, estimator_name=type(self).__name__, input_name="X")
                part = compute(rows)
                if check:
                    part = self._finite_or_refused(part, rows, start, what, prototypes, logits)
                part = part if finish is None else finish(part)
                if out is None:
                    kind = np.float64 if np.issubdtype(part.dtype, np.floating) else part.dtype
                    out = np.empty((len(X), *part.shape[1:]), dtype=kind)
                out[start : start + len(part)] = part
        return out

    def _finite_or_refused(self, part, rows, start, what, prototypes, logits):
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
                part[bad] = self._in_chunks(rows[bad].astype(np.float64), what, None, prototypes, logits)
            bad = ~np.isfinite(part).all(axis=1)
            if not bad.any():
                return part
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Cannot predict {int(bad.sum())} row(s) of X, the first row {start + first}: its values (up to "
            f"{float(np.abs(rows[first]).max()):.3g} in magnitude) are too large for this model, whose scores "
            "overflow even float64 there. Scale X as the training data were scaled, e.g. with the same "
            "sklearn.preprocessing.StandardScaler."
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

    def explain(self, X, top_k=3):
        """The ``top_k`` prototypes behind each prediction, with weights and contributions.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        top_k : int, default=3
            Prototypes to report per sample (at most m).

        Returns
        -------
        Explanation
            See :class:`protoattn.Explanation`; its ``to_frame()`` gives a pandas table.
        """
        if not isinstance(top_k, Integral) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        X = self._validate_X(X)
        prototypes, logits = self._model()  # one model for every chunk, whatever a patch does meanwhile
        n, k = len(X), min(int(top_k), len(prototypes))
        explanation = Explanation(
            predicted=np.empty(n, dtype=self.classes_.dtype),
            logit=np.empty(n),
            prototype_indices=np.empty((n, k), dtype=np.intp),
            prototype_labels=np.empty((n, k), dtype=self.classes_.dtype),
            weights=np.empty((n, k)),
            contributions=np.empty((n, k)),
        )
        # In row chunks, filled in place: memory grows with n * top_k, not with n * n_prototypes. A
        # chunk holds about four (rows, m) arrays at once (weights, contributions, their order, a sort
        # key), so it has a quarter of prediction's rows.
        rows = max(1, _chunk_rows(len(prototypes), X.dtype) // 4)
        for start in range(0, n, rows):
            self._explain_rows(X[start : start + rows], explanation, slice(start, start + rows), prototypes, logits)
        return explanation

    def _explain_rows(self, X, out, rows, prototypes, logits):
        weights = self._in_chunks(X, "weights", None, prototypes, logits)
        predicted = np.argmax(weights @ logits, axis=1)
        contributions = weights * logits[:, predicted].T
        order = np.argsort(-contributions, axis=1, kind="stable")[:, : out.weights.shape[1]]
        out.predicted[rows] = self.classes_[predicted]
        out.logit[rows] = contributions.sum(axis=1)
        out.prototype_indices[rows] = order
        out.prototype_labels[rows] = self._labels(logits)[order]
        out.weights[rows] = np.take_along_axis(weights, order, axis=1)
        out.contributions[rows] = np.take_along_axis(contributions, order, axis=1)

    # ---------------------------------------------------------------- patch

    def add_prototype(self, x, y, *, margin=1.0, replace=None):
        """Insert a prototype at ``x`` whose value makes the model predict ``y`` there.

        The new value row is the model's current logits at x plus ``η`` on class y, with η chosen in
        closed form from the attention weights at x so that afterwards ``predict([x]) == [y]`` with
        the predicted logit ahead of every other class by at least ``margin``. The new key's weight
        at x is what makes this work: with ``attention="idw"`` it is ``1 / eps`` before
        normalisation, so η stays small, and far from x the new prototype's weight decays as 1/d^p,
        so far predictions barely move.

        Parameters
        ----------
        x : array-like of shape (n_features,) or (1, n_features)
            Where to patch.
        y : label
            One of ``classes_``.
        margin : float, default=1.0
            Required logit margin of class y over the runner-up at x, at most ``MAX_MARGIN`` (40):
            beyond it the probability of y at x is 1 to double precision, and a larger margin would
            only move the predictions elsewhere.
        replace : int or None, default=None
            Overwrite prototype ``replace`` instead of adding a new one.

        Returns
        -------
        index : int
            Row of the new prototype in ``prototypes_``.
        """
        check_is_fitted(self)
        x = self._validate_one_sample(x)
        label = self._class_index(y)
        if not isinstance(margin, Real) or isinstance(margin, bool) or not (0 < margin <= MAX_MARGIN):
            raise ValueError(
                f"margin must be a positive number of at most {MAX_MARGIN:g}, got {margin!r}: a logit margin of "
                f"{MAX_MARGIN:g} already makes the probability of y at x 1 to double precision, and a larger "
                "one only changes predictions elsewhere."
            )
        with _PATCHING:  # from the model it reads to the one it writes (see _PATCHING)
            return self._add_prototype(x, label, margin, replace)

    def _add_prototype(self, x, label, margin, replace):
        m = len(self.prototypes_)
        if replace is not None and (
            not isinstance(replace, Integral) or isinstance(replace, bool) or not 0 <= replace < m
        ):
            raise ValueError(f"replace must be None or a prototype index in [0, {m}), got {replace!r}.")
        index = m if replace is None else int(replace)
        old_logits = self._in_chunks(x)[0]
        grow = 1 if replace is None else 0
        prototypes = np.concatenate([self.prototypes_, np.empty((grow, x.shape[1]))])
        logits = np.concatenate([self.logits_, np.empty((grow, len(self.classes_)))])
        prototypes[index], logits[index] = x[0], 0.0
        weights = self._in_chunks(x, "weights", None, prototypes, logits)[0]
        w = weights[index]
        # Logits at x with the new value v = old_logits + η e_y are base + w v; solve for η.
        reached = weights @ logits + w * old_logits
        gap = reached[label] - np.max(np.delete(reached, label))
        eta = max(0.0, margin - gap) / w if w > 0 else math.inf
        logits[index] = old_logits
        logits[index, label] += eta
        if not np.all(np.isfinite(logits[index])):
            raise ValueError(
                f"Cannot patch: the new prototype gets attention weight {w:.3g} at x under "
                f"attention={self._fitted_attention()[0]!r}, too small to move the prediction there."
            )
        after = self._in_chunks(x, "logits", None, prototypes, logits)[0]
        if np.argmax(after) != label:
            raise ValueError("Cannot patch: rounding left x misclassified; use a larger margin.")
        patched = np.append(self.patched_prototypes_, False) if replace is None else self.patched_prototypes_.copy()
        patched[index] = True
        self.prototypes_, self.logits_, self.patched_prototypes_ = prototypes, logits, patched
        return index

    def remove_prototypes(self, indices):
        """Delete prototypes by index (at least one must remain; none is a no-op). Returns self."""
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
            self.prototypes_, self.logits_ = self.prototypes_[keep], self.logits_[keep]
            self.patched_prototypes_ = self.patched_prototypes_[keep]
        return self

    def _validate_one_sample(self, x):
        if hasattr(x, "to_frame") and getattr(x, "ndim", 0) == 1:
            x = x.to_frame().T  # a pandas Series: one row with its feature names
        elif np.ndim(x) == 1:
            x = np.reshape(np.asarray(x), (1, -1))
        if np.ndim(x) != 2 or np.shape(x)[0] != 1:
            raise ValueError(f"x must be one sample of {self.n_features_in_} features, got shape {np.shape(x)}.")
        with _numeric("x"):
            x = validate_data(self, x, reset=False, dtype=np.float64)
        return _with_positive_strides(x)

    def _class_index(self, y):
        if np.ndim(y) != 0:
            raise ValueError(f"y must be a single label, got {y!r}.")
        hits = [i for i, c in enumerate(self.classes_) if c == y]
        if not hits:
            raise ValueError(f"Unknown label {y!r}: expected one of {list(self.classes_)}.")
        return hits[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
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


@contextlib.contextmanager
def _numeric(argument):
    """Name the argument and the fix when numpy cannot turn its values into numbers."""
    try:
        yield
    except ValueError as error:
        if "could not convert" not in str(error):
            raise
        raise ValueError(
            f"{argument} must be numeric: {error}. Encode text and categorical columns first, e.g. with "
            "sklearn.preprocessing.OneHotEncoder in a pipeline."
        ) from error


def _with_positive_strides(X):
    # torch cannot wrap a reversed view such as X[::-1]; copying one is rare and cheap next to predicting.
    return X if min(X.strides) >= 0 else X.copy()


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


def _check_trainable_scale(X):
    # Training runs in float32, where squared distances, at most n_features * (2 max|x|)^2, must fit.
    largest = max(abs(float(X.max())), abs(float(X.min())))
    if 2 * largest * math.sqrt(X.shape[1]) >= math.sqrt(np.finfo(np.float32).max):
        raise ValueError(
            f"X has values up to {largest:.3g} in magnitude: too large for training, which runs in float32 "
            "(squared distances would overflow). Scale the features, e.g. with sklearn.preprocessing.StandardScaler."
        )
