"""Raw tables in and out of the network: which columns are categories, their encoding, and the way
back to the user's units and categories.

Each numeric feature is one column of the encoding, in the user's units (the network standardises it
with the training statistics, :func:`standardisation`); each categorical feature is a one-hot block,
one column per training category. A missing cell (NaN, None, ``pd.NA``) is NaN in the encoding, a
whole block of NaN for a categorical feature, and so is a category that training never saw: distances
then skip it (:func:`protoattn.attention.squared_distances`).
"""

from __future__ import annotations

import copy
import math
import warnings
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_array


def categorical_mask(X, categorical_features, n_features, feature_names=None):
    """Which features are categorical, as a boolean mask, for ``categorical_features`` as in
    :class:`~sklearn.ensemble.HistGradientBoostingClassifier`: ``"from_dtype"`` (the columns of a
    DataFrame whose dtype is ``category``, ``object``, ``string`` or ``bool``), None, or a list of
    names, of indices, or a boolean mask."""
    if categorical_features is None:
        return np.zeros(n_features, dtype=bool)
    if isinstance(categorical_features, str):  # "from_dtype"
        dtypes = getattr(X, "dtypes", None)
        if dtypes is None or not hasattr(X, "columns"):
            return np.zeros(n_features, dtype=bool)
        return np.array([not _numeric_dtype(dtype) for dtype in dtypes], dtype=bool)
    return feature_mask(categorical_features, n_features, feature_names, "categorical_features")


def feature_mask(given, n_features, feature_names, parameter):
    """A boolean mask of the features that ``given`` (a list of names or indices, or a boolean
    mask) names; ``parameter`` is its name in error messages."""
    given = np.asarray(given)
    if given.dtype == bool:
        if given.shape != (n_features,):
            raise ValueError(
                f"{parameter} as a boolean mask must have one entry per feature ({n_features}), "
                f"got shape {given.shape}."
            )
        return given.copy()
    mask = np.zeros(n_features, dtype=bool)
    for item in given.ravel().tolist():
        if isinstance(item, str):
            if feature_names is None or item not in list(feature_names):
                raise ValueError(
                    f"{parameter} names {item!r}, which is not a column of X "
                    f"({'X has no column names' if feature_names is None else list(feature_names)})."
                )
            mask[list(feature_names).index(item)] = True
        elif isinstance(item, Integral) and -n_features <= item < n_features:
            mask[item] = True
        else:
            raise ValueError(f"{parameter} must hold column names or indices in [0, {n_features}), got {item!r}.")
    return mask


def _numeric_dtype(dtype) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def split(X, is_categorical, dtype=np.float64, ensure_all_finite="allow-nan"):
    """The numeric columns of a raw X as floats (NaN where missing) and the categorical ones as an
    object array (None where missing). With no categorical feature, X itself through
    :func:`~sklearn.utils.check_array` in ``dtype`` (a list of dtypes keeps X's if it is one);
    ``ensure_all_finite`` as there; a sparse X stays a CSR matrix."""
    if not is_categorical.any():
        numeric = _numbers(X, dtype, ensure_all_finite)
        return numeric, np.empty((numeric.shape[0], 0), dtype=object)
    columns = _columns(X)
    numeric = [
        _numbers(c.reshape(-1, 1), np.float64, ensure_all_finite)[:, 0]
        for c, cat in zip(columns, is_categorical, strict=True)
        if not cat
    ]
    categorical = [_categories(c) for c, cat in zip(columns, is_categorical, strict=True) if cat]
    n = len(columns[0])
    return (
        np.column_stack(numeric) if numeric else np.empty((n, 0)),
        np.column_stack(categorical) if categorical else np.empty((n, 0), dtype=object),
    )


def _columns(X):
    """The columns of X as 1-D arrays (object arrays where mixed)."""
    if sp.issparse(X):
        X = X.toarray()
    if hasattr(X, "columns"):
        return [X.iloc[:, j].to_numpy(dtype=object, na_value=None) for j in range(X.shape[1])]
    array = np.asarray(X, dtype=object)
    if array.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {array.shape}.")
    return list(array.T)


def _numbers(X, dtype, ensure_all_finite):
    try:
        return check_array(X, accept_sparse="csr", dtype=dtype, ensure_all_finite=ensure_all_finite, input_name="X")
    except (ValueError, TypeError) as error:
        if "could not convert" not in str(error) and "float()" not in str(error) and "NAType" not in str(error):
            raise
        raise ValueError(
            f"X holds values that are not numbers ({error}). Name the categorical columns with "
            "categorical_features (a DataFrame's object, string and category columns are found by "
            'the default "from_dtype"), or encode them first.'
        ) from error


def _categories(column):
    """A categorical column as objects, with None for every kind of missing value."""
    import pandas as pd

    return np.array([None if _missing(v, pd) else v for v in column], dtype=object)


def _missing(value, pd) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def fit_categories(categorical):
    """The sorted training categories of each categorical column."""
    categories = []
    for j in range(categorical.shape[1]):
        present = [v for v in categorical[:, j] if v is not None]
        if not present:
            raise ValueError(f"Categorical column {j} has no value in the training data: drop it.")
        try:
            categories.append(np.array(sorted(set(present)), dtype=object))
        except TypeError as error:
            raise ValueError(
                f"Categorical column {j} mixes values that cannot be ordered ({error}): use one type per column."
            ) from error
    return categories


def standardisation(encoded, is_categorical, categories, sample_weight=None, scaler=None):
    """Each feature's offset and scale over the observed cells of the encoding (:func:`encode`), by a
    :class:`~sklearn.preprocessing.StandardScaler` on its columns, and the scaler: pass it back to
    update them with more rows (a stream). A numeric feature's are its mean and standard deviation; a
    categorical feature's are 0 and the root of its one-hot block's total variance,
    ``sqrt(1 - Σ_c p_c²)``, so that two random rows differ by as much in every feature, numeric or
    categorical, before the metric learns which matter. Scale 1 where a feature is constant."""
    if not encoded.shape[1]:
        return np.zeros(0), np.ones(0), None
    if sample_weight is not None and np.all(sample_weight == 1):
        sample_weight = None  # the same statistics, by a path several times faster
    # A copy: a call that fails later leaves the stream's scaler as it was.
    scaler = (copy.deepcopy(scaler) or StandardScaler()).partial_fit(encoded, sample_weight=sample_weight)
    means, scales = np.zeros(len(is_categorical)), np.ones(len(is_categorical))
    columns = column_features(is_categorical, categories)
    numeric = ~is_categorical[columns]
    means[~is_categorical], scales[~is_categorical] = np.nan_to_num(scaler.mean_[numeric]), scaler.scale_[numeric]
    if is_categorical.any():
        variance = np.bincount(columns[~numeric], np.nan_to_num(scaler.var_[~numeric]), len(is_categorical))
        scales[is_categorical] = np.sqrt(variance[is_categorical])
    return means, np.where(np.isfinite(scales) & (scales > 0), scales, 1.0), scaler


#: "auto" puts on a logarithmic scale the columns never negative whose skewness exceeds this (counts,
#: populations, prices) ...
LOG_SKEWNESS = 2.0
#: ... and the columns of either sign whose standard deviation exceeds this many median absolute
#: deviations (profits and losses: a few extremes make the spread) ...
LOG_SPREAD = 10.0
#: ... among those with tails heavier than Laplace's (excess kurtosis), not two clusters far apart.
LOG_KURTOSIS = 3.0
#: ... on every k-th training row, at most this many.
MOMENT_ROWS = 10_000


def log_units(numeric, low, chosen=None):
    """For each numeric column, the unit ``u`` of the logarithmic scale ``asinh(x / u)`` that the
    model compares it on, or 0 for a column compared as it is. ``chosen`` (a boolean per column)
    names the columns; None chooses the heavy-tailed amounts of :func:`heavy_tailed` (``low``: the
    columns' minima) whose median magnitude is positive (not mostly-zero columns such as an image's
    border pixels). ``u`` is the column's median magnitude: ``asinh(x / u)`` is ``log(2x / u)`` for
    large x, does not depend on the column's units, and stays defined for 0 and negative values."""
    automatic = chosen is None
    units = np.zeros(numeric.shape[1])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no value is refused later
        chosen = heavy_tailed(numeric, low) if automatic else np.asarray(chosen, dtype=bool).copy()
        if not chosen.any():
            return units
        magnitude = np.abs(numeric[:, chosen])
        unit = np.nanmedian(magnitude, 0)
        if automatic:
            chosen[chosen], unit = unit > 0, unit[unit > 0]
        else:  # a column the user chose: its mean magnitude where most values are 0, else 1
            unit = np.where(unit > 0, unit, np.nanmean(magnitude, 0))
    units[chosen] = np.where(np.isfinite(unit) & (unit > 0), unit, 1.0)
    return units


def heavy_tailed(numeric, low):
    """Which numeric columns are heavy-tailed amounts, where plain differences would let the largest
    values decide every distance: columns never negative (``low``, the minima, >= 0) with a skewness
    above ``LOG_SKEWNESS``, and columns of either sign whose standard deviation exceeds
    ``LOG_SPREAD`` median absolute deviations among those with an excess kurtosis above
    ``LOG_KURTOSIS``. On every k-th row, at most ``MOMENT_ROWS`` (the statistics settle long before
    that, and fitting large data should not wait on them)."""
    numeric = numeric[:: max(1, math.ceil(len(numeric) / MOMENT_ROWS))]
    mean = np.nanmean if np.isnan(numeric).any() else np.mean  # nanmean is ten times slower
    z = numeric - mean(numeric, 0)
    spread = np.sqrt(mean(z * z, 0))
    z /= np.where(spread > 0, spread, 1.0)
    square = z * z  # products, not powers: numpy's float power is ten times slower
    heavy = (low >= 0) & (mean(square * z, 0) > LOG_SKEWNESS)
    tailed = ~heavy & (mean(square * square, 0) - 3 > LOG_KURTOSIS)
    if tailed.any():
        x = numeric[:, tailed]
        deviation = np.nanmedian(np.abs(x - np.nanmedian(x, 0)), 0)
        heavy[tailed] = (deviation > 0) & (spread[tailed] > LOG_SPREAD * deviation)
    return heavy


#: Numeric features correlated beyond this (|r|) are near-copies of one another, repeated measures (a
#: population at six censuses) or one quantity in two units: together they span one dimension.
COPY_CORRELATION = 0.95
#: ... judged on every k-th row, at most this many (correlations near 1 settle long before).
COPY_ROWS = 2_000


def distinct_features(X, numeric):
    """How many of X's ``numeric`` columns (a boolean mask) are not near-copies of another (|r| >
    ``COPY_CORRELATION``), counting each group of near-copies once; on every k-th row, at most
    ``COPY_ROWS``, with a missing cell at its column's mean (X is standardised)."""
    x = np.nan_to_num(X[:: max(1, math.ceil(len(X) / COPY_ROWS))][:, numeric])
    x = x - x.mean(0)
    norms = np.linalg.norm(x, axis=0)
    x /= np.where(norms > 0, norms, 1.0)
    copies = np.abs(x.T @ x) > COPY_CORRELATION
    uncovered, groups = np.ones(len(copies), dtype=bool), 0
    for i, row in enumerate(copies):  # a column not yet covered starts a group: itself and its near-copies
        if uncovered[i]:
            groups += 1
            uncovered &= ~row
    return groups


def to_log(numeric, units):
    """The numeric columns with those of a positive unit on their logarithmic scale ``asinh(x / u)``
    (see :func:`log_units`); a copy where any is."""
    logged = units > 0
    if not logged.any():
        return numeric
    numeric = np.array(numeric, dtype=np.result_type(numeric, np.float32))
    numeric[..., logged] = np.arcsinh(numeric[..., logged] / units[logged])
    return numeric


def from_log(values, units):
    """The inverse of :func:`to_log`: ``u sinh(t)`` on the columns of a positive unit."""
    logged = units > 0
    if not logged.any():
        return values
    values = np.array(values, dtype=np.result_type(values, np.float32))
    values[..., logged] = units[logged] * np.sinh(values[..., logged])
    return values


def encode(numeric, categorical, is_categorical, categories, dtype=np.float64):
    """The network's input: one column per numeric feature in the user's units, one one-hot block per
    categorical feature, in the features' order; NaN where missing or unknown."""
    if not is_categorical.any():
        return numeric
    n = len(numeric)
    parts, numeric_j, categorical_j = [], 0, 0
    for cat in is_categorical:
        if not cat:
            parts.append(numeric[:, numeric_j : numeric_j + 1].astype(dtype))
            numeric_j += 1
            continue
        known = categories[categorical_j]
        codes = _codes(categorical[:, categorical_j], known)
        block = np.zeros((n, len(known)), dtype=dtype)
        block[np.arange(n)[codes >= 0], codes[codes >= 0]] = 1.0
        block[codes < 0] = np.nan
        parts.append(block)
        categorical_j += 1
    return np.concatenate(parts, axis=1)


def _codes(values, known):
    """Each value's index among the sorted ``known`` categories; -1 where missing or unknown."""
    lookup = {v: i for i, v in enumerate(known.tolist())}
    return np.array([lookup.get(v, -1) if v is not None else -1 for v in values.tolist()], dtype=np.intp)


def column_features(is_categorical, categories):
    """For each column of the encoding, the feature it belongs to."""
    sizes = iter([len(c) for c in categories])
    return np.repeat(np.arange(len(is_categorical)), [next(sizes) if cat else 1 for cat in is_categorical])


def decode(encoded, is_categorical, categories):
    """Rows of the encoding back in the user's units and categories: a float array when every feature
    is numeric, else an object array (a block's largest entry names its category)."""
    if not is_categorical.any():
        return encoded
    rows = np.empty((len(encoded), len(is_categorical)), dtype=object)
    start, categorical_j = 0, 0
    for j, cat in enumerate(is_categorical):
        if not cat:
            rows[:, j] = encoded[:, start].tolist()
            start += 1
            continue
        known = categories[categorical_j]
        block = encoded[:, start : start + len(known)]
        rows[:, j] = np.where(np.isnan(block).all(1), None, known[np.argmax(np.nan_to_num(block, nan=-1.0), axis=1)])
        start += len(known)
        categorical_j += 1
    return rows
