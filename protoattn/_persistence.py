"""Model files that hold only data: saving and loading never runs code from the file.

Pickle (and so joblib) rebuilds objects by calling functions named in the file, so loading a pickle
from someone else runs their code. A protoattn model file is a zip archive of

- ``metadata.json``: format and library versions, hyperparameters and the fitted scalars, and for
  every array its member name, dtype, shape and SHA-256;
- ``metadata.sha256``: the SHA-256 of ``metadata.json``;
- ``arrays/<i>.npy``: one array each, written and read by NumPy with ``allow_pickle=False``.

Loading checks every digest, dtype, shape and the fitted model's invariants before it returns, and
refuses anything else with a ``ValueError``. The digests detect truncation, corruption and edits
made without recomputing them; they are not a signature, so someone who rewrites the whole file can
still make it describe a different (but data-only) model.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import secrets
import warnings
import zipfile
from numbers import Integral, Real

import numpy as np
from sklearn.utils.validation import check_is_fitted

FORMAT = "protoattn-model"
FORMAT_VERSION = 1

# Array dtypes a file may hold: bool, signed and unsigned integers, floats, unicode strings.
_ARRAY_KINDS = "biufU"
# Fitted attributes: public names ending in "_" (scikit-learn's convention).
_FITTED_NAME = re.compile(r"[a-z][a-z0-9_]*_")


class InconsistentVersionWarning(UserWarning):
    """A model made by another protoattn version was loaded or unpickled.

    Like scikit-learn's warning of the same name: the model may behave differently or fail under
    this version. Refit it, or use it with the version that made it.

    Attributes
    ----------
    estimator_name : str
    original_version : str
        The protoattn version that saved or pickled the model (``"unknown"`` if it did not say).
    current_version : str
        The running protoattn version.
    """

    def __init__(self, *, estimator_name, original_version, current_version):
        self.estimator_name = estimator_name
        self.original_version = original_version
        self.current_version = current_version

    def __str__(self):
        return (
            f"Loading {self.estimator_name} made by protoattn {self.original_version} with protoattn "
            f"{self.current_version}; it may fail or give other results. Refit the model with this "
            f"version, or load it with protoattn {self.original_version}."
        )


def library_version():
    from . import __version__  # at call time: the package imports this module before defining it

    return __version__


def warn_if_other_version(estimator_name, original_version, stacklevel=3):
    current = library_version()
    if original_version != current:
        warnings.warn(
            InconsistentVersionWarning(
                estimator_name=estimator_name, original_version=original_version, current_version=current
            ),
            stacklevel=stacklevel,
        )


# ----------------------------------------------------------------------------------------- save


def save(estimator, file):
    """Write a fitted estimator to ``file`` (a path or a writable binary file object)."""
    check_is_fitted(estimator)
    if callable(estimator.attention):
        raise TypeError(
            "Cannot save a model whose attention is a Python function: a data-only file cannot hold "
            "code. Use one of protoattn.ATTENTIONS, or joblib.dump for a model you only load yourself."
        )
    arrays = []
    params = {name: _encode(name, value, arrays) for name, value in estimator.get_params(deep=False).items()}
    attributes = {
        name: _encode(name, value, arrays) for name, value in vars(estimator).items() if _FITTED_NAME.fullmatch(name)
    }
    members, table = {}, []
    for i, array in enumerate(arrays):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=False)
        members[f"arrays/{i}.npy"] = data = buffer.getvalue()
        table.append({"dtype": array.dtype.str, "shape": list(array.shape), "sha256": hashlib.sha256(data).hexdigest()})
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "protoattn_version": library_version(),
        "estimator": type(estimator).__name__,
        "params": params,
        "attributes": attributes,
        "arrays": table,
    }
    text = json.dumps(metadata, indent=1).encode()
    members = {"metadata.json": text, "metadata.sha256": hashlib.sha256(text).hexdigest().encode(), **members}
    _write_zip(file, members)


def _write_zip(file, members):
    def write(target):
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)

    if not isinstance(file, str | os.PathLike):
        write(file)
        return
    # Write next to the target and rename: a failed save never leaves a half-written model behind,
    # and never destroys the file it was meant to replace.
    partial = f"{os.fspath(file)}.{secrets.token_hex(4)}.partial"
    try:
        with open(partial, "xb") as target:
            write(target)
        os.replace(partial, file)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def _encode(name, value, arrays):
    """A JSON value for ``value``: plain JSON for scalars, ``{"tag": ...}`` for the rest; arrays go
    to ``arrays`` and are referred to by index."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 2 and not _one_type(value):
        # A table of numbers and categories (prototypes_ of mixed features): one array per column.
        return {"object_columns": [_encode(name, value[:, j].copy(), arrays) for j in range(value.shape[1])]}
    if isinstance(value, np.ndarray):
        arrays.append(_plain_array(name, value))
        # Object arrays (pandas-style labels, feature names) come back as object arrays.
        return {"object_array" if value.dtype == object else "array": len(arrays) - 1}
    if isinstance(value, list | tuple):
        return {"list": [_encode(name, item, arrays) for item in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(name, k, arrays), _encode(name, v, arrays)] for k, v in value.items()]}
    if isinstance(value, np.random.RandomState):
        _, key, pos, has_gauss, cached = value.get_state(legacy=True)
        return {"random_state": [_encode(name, key, arrays), int(pos), int(has_gauss), float(cached)]}
    raise TypeError(
        f"Cannot save {name}={value!r}: a data-only model file holds numbers, strings, arrays and "
        "lists or dicts of them."
    )


def _one_type(array):
    return len({type(v) for v in array.ravel().tolist()}) <= 1


def _plain_array(name, array):
    """``array`` with a dtype that needs no pickle; object arrays of one plain type are converted."""
    if array.dtype == object:
        converted = np.array(array.tolist())
        if converted.shape == array.shape and converted.astype(object).tolist() == array.tolist():
            array = converted
    if array.dtype.kind not in _ARRAY_KINDS or array.dtype.fields is not None:
        raise TypeError(
            f"Cannot save {name}: its values of dtype {array.dtype} cannot be stored without pickle. Use "
            "int, float, bool or str values (class labels, feature names)."
        )
    return array


# ----------------------------------------------------------------------------------------- load


def load(cls, file):
    """Read an estimator of class ``cls`` saved by :func:`save`; refuse any file that is not one."""
    # A missing or unreadable file raises here, as itself; past this point every failure means a bad file.
    with open(file, "rb") if isinstance(file, str | os.PathLike) else contextlib.nullcontext(file) as stream:
        try:
            metadata, arrays = _read_zip(file, stream)
        except _InvalidFile:
            raise
        except Exception as error:  # whatever a damaged archive makes zipfile, zlib or json raise
            raise _invalid(file, f"it is not a complete model archive ({error!r})") from error
    if metadata.get("estimator") != cls.__name__:
        raise _invalid(file, f"it holds a {metadata.get('estimator')!r}, not a {cls.__name__}")
    warn_if_other_version(cls.__name__, str(metadata.get("protoattn_version", "unknown")), stacklevel=4)
    try:
        params = {name: _decode(value, arrays) for name, value in metadata["params"].items()}
        attributes = {name: _decode(value, arrays) for name, value in metadata["attributes"].items()}
    except Exception as error:  # a missing key, a wrong type, an unknown tag, nesting too deep
        raise _invalid(file, f"its metadata is malformed ({error!r})") from error
    unknown = set(params) - set(cls().get_params(deep=False))
    if unknown:
        raise _invalid(
            file,
            f"it sets parameters {sorted(unknown)} unknown to protoattn {library_version()}; load it with "
            f"protoattn {metadata.get('protoattn_version')}, which saved it",
        )
    estimator = cls(**params)
    try:
        estimator._validate_params()
    except ValueError as error:
        raise _invalid(file, str(error)) from error
    for name, value in attributes.items():
        if not _FITTED_NAME.fullmatch(name) or hasattr(cls, name):
            raise _invalid(file, f"{name!r} is not a fitted attribute")
        setattr(estimator, name, value)
    problem = _fitted_state_problem(estimator)
    if problem:
        raise _invalid(file, problem)
    return estimator


class _InvalidFile(ValueError):
    pass


def _invalid(file, reason):
    name = os.fspath(file) if isinstance(file, str | os.PathLike) else "the file"
    return _InvalidFile(
        f"Cannot load {name}: {reason}. Only files written by IDWAttentionClassifier.save load; a "
        "truncated, corrupted or edited file is refused."
    )


def _read_zip(file, stream):
    with zipfile.ZipFile(stream) as archive:
        text = archive.read("metadata.json")
        if hashlib.sha256(text).hexdigest().encode() != archive.read("metadata.sha256"):
            raise _invalid(file, "metadata.json does not match its SHA-256 (metadata.sha256)")
        metadata = json.loads(text)
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise _invalid(file, "it is not a protoattn model file")
        version = metadata.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise _invalid(
                file,
                f"its format version {version!r} is newer than this protoattn ({library_version()}) reads "
                f"({FORMAT_VERSION}); upgrade protoattn",
            )
        table = metadata.get("arrays")
        if not isinstance(table, list):
            raise _invalid(file, "its metadata lists no arrays")
        expected = {"metadata.json", "metadata.sha256"} | {f"arrays/{i}.npy" for i in range(len(table))}
        if set(archive.namelist()) != expected or len(archive.namelist()) != len(expected):
            raise _invalid(file, "its members are not the ones its metadata lists")
        # Stored, not compressed: reading a member then takes no more memory than the file's size.
        if any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist()):
            raise _invalid(file, "it has compressed members")
        arrays = [_read_array(file, archive.read(f"arrays/{i}.npy"), entry) for i, entry in enumerate(table)]
    return metadata, arrays


def _read_array(file, data, entry):
    if not isinstance(entry, dict) or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise _invalid(file, "an array does not match its SHA-256")
    try:
        array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:  # object arrays, malformed headers and short data alike
        raise _invalid(file, f"an array cannot be read without pickle ({error})") from error
    if (
        array.dtype.kind not in _ARRAY_KINDS
        or array.dtype.fields is not None
        or array.dtype.str != entry.get("dtype")
        or list(array.shape) != entry.get("shape")
    ):
        raise _invalid(file, f"an array of dtype {array.dtype} and shape {array.shape} is not what its metadata says")
    return array


def _decode(value, arrays):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    ((tag, content),) = value.items()
    if tag == "array":
        return arrays[content]
    if tag == "object_array":
        return arrays[content].astype(object)
    if tag == "object_columns":
        columns = [_decode(column, arrays) for column in content]
        return np.column_stack(columns).astype(object) if columns else np.empty((0, 0), dtype=object)
    if tag == "list":
        return [_decode(item, arrays) for item in content]
    if tag == "dict":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in content}
    if tag == "random_state":
        key, pos, has_gauss, cached = content
        random_state = np.random.RandomState()
        random_state.set_state(("MT19937", _decode(key, arrays), pos, has_gauss, cached))
        return random_state
    raise ValueError(f"unknown entry {tag!r}")


def _set_table_defaults(clf):
    """A model saved before raw tables gets the state of an all-numeric table that was not standardised."""
    d = clf.n_features_in_
    defaults = {
        "is_categorical_": np.zeros(d, dtype=bool),
        "categories_": [],
        "feature_means_": np.zeros(d),
        "feature_stds_": np.ones(d),
    }
    for name, default in defaults.items():
        if not hasattr(clf, name):
            setattr(clf, name, default)


def _table_problem(clf):
    """What is wrong with the raw-table state (which features are categories, their categories, the
    numeric statistics, and prototypes_ of mixed features), or None."""
    d = clf.n_features_in_
    mask = clf.is_categorical_
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.shape != (d,):
        return f"is_categorical_ must be a bool array of shape ({d},)"
    categories = clf.categories_
    if not isinstance(categories, list) or len(categories) != mask.sum():
        return "categories_ must be a list of one array per categorical feature"
    for values in categories:
        if not isinstance(values, np.ndarray) or values.ndim != 1 or len(values) < 1:
            return "categories_ must hold non-empty 1-D arrays"
        if len(set(values.tolist())) != len(values):
            return "categories_ must hold distinct categories"
    for name in ("feature_means_", "feature_stds_"):
        array = getattr(clf, name)
        if not isinstance(array, np.ndarray) or array.dtype != np.float64 or array.shape != (d,):
            return f"{name} must be a float64 array of shape ({d},)"
        if not np.all(np.isfinite(array)):
            return f"{name} holds NaN or infinity"
    if not np.all(clf.feature_stds_ > 0):
        return "feature_stds_ must be positive"
    if not mask.any():
        return None
    prototypes = clf.prototypes_
    if not isinstance(prototypes, np.ndarray) or prototypes.ndim != 2 or prototypes.shape[1:] != (d,):
        return f"prototypes_ must be a 2-D array of {d} columns"
    known = iter(categories)
    for j, categorical in enumerate(mask.tolist()):
        column = prototypes[:, j].tolist()
        if categorical:
            allowed = set(next(known).tolist())
            if not all(v in allowed for v in column):
                return f"prototypes_ column {j} holds values that are not among its categories_"
        elif not all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in column):
            return f"prototypes_ column {j} must hold finite numbers"
    return None


def _fitted_state_problem(clf):
    """What is wrong with a loaded model's fitted state, or None: the invariants that predict relies on."""
    required = ["classes_", "n_features_in_", "prototypes_", "logits_", "patched_prototypes_", "power_"]
    missing = [name for name in required if not hasattr(clf, name)]
    if missing:
        return f"it lacks the fitted attributes {missing}"
    classes, prototypes, logits = clf.classes_, clf.prototypes_, clf.logits_
    d = clf.n_features_in_
    if not isinstance(classes, np.ndarray) or classes.ndim != 1 or len(classes) < 2:
        return "classes_ must be a 1-D array of at least 2 labels"
    if len(np.unique(classes)) != len(classes):
        return "classes_ must hold distinct labels"
    if not isinstance(d, int) or d < 1:
        return "n_features_in_ must be a positive integer"
    _set_table_defaults(clf)
    mask = clf.is_categorical_
    checked = [("logits_", logits, len(classes))]
    if not (isinstance(mask, np.ndarray) and mask.dtype == bool and mask.any()):
        checked.insert(0, ("prototypes_", prototypes, d))
    for name, array, columns in checked:
        if not isinstance(array, np.ndarray) or array.dtype != np.float64 or array.ndim != 2:
            return f"{name} must be a 2-D float64 array"
        if array.shape != (len(prototypes), columns) or len(array) < 1:
            return f"{name} has shape {array.shape}, expected ({len(prototypes)}, {columns})"
        if not np.all(np.isfinite(array)):
            return f"{name} holds NaN or infinity"
    problem = _table_problem(clf)
    if problem:
        return problem
    patched = clf.patched_prototypes_
    if not isinstance(patched, np.ndarray) or patched.dtype != bool or patched.shape != (len(prototypes),):
        return f"patched_prototypes_ must be a bool array of shape ({len(prototypes)},)"
    if not isinstance(clf.power_, float) or not 0 < clf.power_ < math.inf:
        return "power_ must be a positive finite float"
    scales = getattr(clf, "feature_scales_", np.ones(d))
    if not isinstance(scales, np.ndarray) or scales.dtype != np.float64 or scales.shape != (d,):
        return f"feature_scales_ must be a float64 array of shape ({d},)"
    if not np.all(np.isfinite(scales) & (scales > 0)):
        return "feature_scales_ must be positive and finite"
    for name, array in getattr(clf, "attention_params_", {}).items():
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f" or not np.all(np.isfinite(array)):
            return f"attention_params_[{name!r}] must be a finite float array"
    names = getattr(clf, "feature_names_in_", None)
    if names is not None and (
        not isinstance(names, np.ndarray) or names.shape != (d,) or not all(isinstance(n, str) for n in names)
    ):
        return f"feature_names_in_ must hold {d} names"
    return None
