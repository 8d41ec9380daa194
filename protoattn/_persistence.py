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

Its work is bounded before it starts, whatever the file: only a regular file of at most
``MAX_FILE_BYTES`` is opened (a FIFO would block, ``/dev/zero`` never ends); the zip directory and
the metadata are read and checked before any array (members stored, not overlapping, each array's
declared dtype and shape matching its member's size and the metadata's own counts, each array used
once), and no member is read past its declared size. A file that passes still takes at most about
twice its size in memory.
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
import stat
import struct
import warnings
import zipfile
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._training import MAX_LOG_SCALE
from .attention import ATTENTIONS, BOUNDED_ATTENTIONS

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
    if callable(estimator.attention) or callable(getattr(estimator, "attention_", None)):
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
    # Refuse here what load would refuse, rather than write a file that cannot be read back.
    size = sum(len(data) for data in members.values())
    if len(arrays) > MAX_ARRAYS or len(text) > MAX_METADATA_BYTES or size > MAX_FILE_BYTES - 2**20:
        raise ValueError(
            f"Cannot save this model: it has {len(arrays)} arrays, {len(text)} bytes of metadata and "
            f"{size} bytes in all, beyond what load accepts ({MAX_ARRAYS} arrays, {MAX_METADATA_BYTES} "
            f"bytes of metadata, {MAX_FILE_BYTES} bytes). Use joblib.dump for a model this large."
        )
    _write_zip(file, members)


def _write_zip(file, members):
    def write(target):
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)

    if not isinstance(file, str | os.PathLike):
        write(file)
        return
    # A link is written through, so that it keeps pointing at the model, as open(path, "wb") would.
    path = os.path.realpath(file)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # a replaced file keeps its permissions
    except FileNotFoundError:
        mode = None
    # Write next to the target and rename: a failed save never leaves a half-written model behind,
    # and never destroys the file it was meant to replace.
    partial = f"{path}.{secrets.token_hex(4)}.partial"
    try:
        with open(partial, "xb") as target:
            if mode is not None:
                os.chmod(partial, mode)
            write(target)
        os.replace(partial, path)
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

#: What :func:`load` accepts at most; a file beyond any of these is refused before it is read. The
#: whole file: every array is read into memory, so this also bounds the memory a load takes (about
#: twice the file's size at the peak).
MAX_FILE_BYTES = 2**30
#: ``metadata.json``: hyperparameters, scalars and the loss curve (about 25 bytes per epoch).
MAX_METADATA_BYTES = 2**24
#: JSON objects and lists in the metadata: each costs memory out of proportion to its bytes.
MAX_METADATA_CONTAINERS = 2**16
#: Arrays in a file (members ``arrays/<i>.npy``).
MAX_ARRAYS = 2**12
#: Values of the arrays that load as Python objects (string labels, feature names), in all: each
#: takes some 50 bytes of memory for the 4 to 8 it takes in the file.
MAX_OBJECT_VALUES = 2**20
# An .npy member's header (magic, version, length and the header text, which numpy itself caps at
# 10,000 bytes); the data follow it.
_NPY_HEADER_BYTES = (10, 12 + 10_000)
_END_RECORD = struct.Struct("<4s4H2LH")  # the zip end of central directory record, 22 bytes
_DTYPE = re.compile(r"[<>|][biuf][1248]|[<>|]b1|[<>]U[1-9][0-9]{0,6}")


def load(cls, file):
    """Read an estimator of class ``cls`` saved by :func:`save`; refuse any file that is not one.

    The work is bounded before it starts: the file must be a regular file (not a FIFO or device,
    which could block or never end) of at most ``MAX_FILE_BYTES``; the archive's directory and the
    metadata are read and checked first (names, types, shapes and sizes of every array against the
    limits here and against the metadata's own counts), and only then the arrays, each no further
    than its declared size and each used once.
    """
    # A missing or unreadable file raises here, as itself; past this point every failure means a bad file.
    with _open_regular(file) if isinstance(file, str | os.PathLike) else contextlib.nullcontext(file) as stream:
        try:
            metadata, arrays = _read_zip(file, stream)
        except _InvalidFile:
            raise
        except Exception as error:  # whatever a damaged archive makes zipfile, numpy or json raise
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
    # Files from before these were fitted attributes: the model was fitted with its parameters.
    if not hasattr(estimator, "attention_"):
        estimator.attention_ = estimator.attention
    if not hasattr(estimator, "eps_"):
        estimator.eps_ = estimator.eps
    try:
        problem = _fitted_state_problem(estimator)
    except Exception as error:  # a value of a type the checks did not foresee
        problem = f"its fitted state is malformed ({error!r})"
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


@contextlib.contextmanager
def _open_regular(path):
    """The file at ``path`` opened for reading, if it is a regular file of at most MAX_FILE_BYTES.

    Opened without blocking and checked on the open descriptor (no race with a rename): opening a
    FIFO for reading would wait for a writer, and reading /dev/zero would never end.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
            raise _invalid(path, f"it is not a regular file but {kind}")
        if info.st_size > MAX_FILE_BYTES:
            raise _invalid(path, f"it has {info.st_size} bytes, more than a model file may ({MAX_FILE_BYTES})")
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with stream:
        yield stream


def _read_zip(file, stream):
    size = stream.seek(0, io.SEEK_END)
    if size > MAX_FILE_BYTES:
        raise _invalid(file, f"it has {size} bytes, more than a model file may ({MAX_FILE_BYTES})")
    directory_offset = _check_end_record(file, stream, size)
    with zipfile.ZipFile(stream) as archive:
        infos = _check_members(file, archive, directory_offset)
        text = _member(archive, infos["metadata.json"])
        if hashlib.sha256(text).hexdigest().encode() != _member(archive, infos["metadata.sha256"]):
            raise _invalid(file, "metadata.json does not match its SHA-256 (metadata.sha256)")
        if text.count(b"[") + text.count(b"{") > MAX_METADATA_CONTAINERS:
            raise _invalid(file, f"its metadata has more than {MAX_METADATA_CONTAINERS} lists and objects")
        metadata = json.loads(text)
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise _invalid(file, "it is not a protoattn model file")
        version = metadata.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _invalid(file, f"its format version {version!r} is not a positive integer")
        if version > FORMAT_VERSION:
            raise _invalid(
                file,
                f"its format version {version!r} is newer than this protoattn ({library_version()}) reads "
                f"({FORMAT_VERSION}); upgrade protoattn",
            )
        table = _check_table(file, metadata, infos)
        arrays = [_read_array(file, archive, infos[f"arrays/{i}.npy"], entry) for i, entry in enumerate(table)]
    return metadata, arrays


def _check_end_record(file, stream, size):
    """The central directory's offset, from the archive's last 22 bytes, which save always ends with:
    an end record with no comment and no ZIP64 record before it (zipfile would otherwise follow a
    ZIP64 record's counts and sizes, which can claim anything)."""
    if size < _END_RECORD.size + 20:
        raise _invalid(file, f"it has only {size} bytes")
    stream.seek(size - _END_RECORD.size - 20)
    tail = stream.read(_END_RECORD.size + 20)
    signature, disk, start_disk, entries_here, entries, directory_size, directory_offset, comment = _END_RECORD.unpack(
        tail[20:]
    )
    if signature != b"PK\x05\x06" or comment or disk or start_disk or entries_here != entries:
        raise _invalid(file, "it does not end as a model archive does (a zip end record without comment)")
    if tail[:4] == b"PK\x06\x07":
        raise _invalid(file, "it is a ZIP64 archive, which save never writes")
    if entries > MAX_ARRAYS + 2 or directory_offset + directory_size != size - _END_RECORD.size:
        raise _invalid(
            file, f"its zip directory lists {entries} members in {directory_size} bytes at offset {directory_offset}"
        )
    return directory_offset


def _check_members(file, archive, directory_offset):
    """The members by name, once each checked: stored (not compressed, not encrypted), within the
    file before its directory, and not overlapping (a member that overlaps others makes a small file
    read as a huge one)."""
    infos = archive.infolist()
    names = {info.filename for info in infos}
    arrays = len(infos) - 2
    if len(names) != len(infos) or names != {"metadata.json", "metadata.sha256"} | {
        f"arrays/{i}.npy" for i in range(arrays)
    }:
        raise _invalid(file, "its members are not the ones its metadata lists")
    if any(info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 for info in infos):
        raise _invalid(file, "it has compressed or encrypted members")
    end = 0
    for info in sorted(infos, key=lambda info: info.header_offset):
        if info.file_size != info.compress_size or info.header_offset < end:
            raise _invalid(file, f"its member {info.filename} overlaps another or has two sizes")
        # The local header is at least 30 bytes and the name; its extra field may add more, which
        # reading checks (zipfile compares the name, and reads no more than compress_size bytes).
        end = info.header_offset + 30 + len(info.filename.encode()) + info.compress_size
    if end > directory_offset:
        raise _invalid(file, "its members overlap its zip directory")
    by_name = {info.filename: info for info in infos}
    if by_name["metadata.json"].file_size > MAX_METADATA_BYTES or by_name["metadata.sha256"].file_size != 64:
        raise _invalid(file, f"its metadata is larger than {MAX_METADATA_BYTES} bytes or its digest is not one")
    return by_name


def _member(archive, info):
    """A member's bytes: no more than its directory entry declares (checked against its CRC)."""
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise ValueError(f"{info.filename} has {len(data)} bytes, not {info.file_size}")
    return data


def _check_table(file, metadata, infos):
    """The metadata's arrays, each checked against its member before any is read: a plain dtype, a
    shape whose data fit the member exactly, and one reference from the parameters or attributes;
    and the arrays of the fitted attributes that prediction uses of the shapes the metadata's own
    counts give them."""
    table = metadata.get("arrays")
    if not isinstance(table, list) or len(table) != len(infos) - 2:
        raise _invalid(file, "its metadata does not list its arrays")
    shapes, objects = [], 0
    for i, entry in enumerate(table):
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "sha256"}:
            raise _invalid(file, f"the metadata of array {i} is malformed")
        if not isinstance(entry["dtype"], str) or not _DTYPE.fullmatch(entry["dtype"]):
            raise _invalid(
                file,
                f"array {i} has dtype {entry['dtype']!r}: only bool, integer, float and string arrays load, "
                "without pickle",
            )
        if (
            not isinstance(entry["shape"], list)
            or len(entry["shape"]) > 4
            or not all(type(n) is int and 0 <= n <= MAX_FILE_BYTES for n in entry["shape"])
            or not isinstance(entry["sha256"], str)
        ):
            raise _invalid(file, f"the metadata of array {i} is malformed")
        count = math.prod(entry["shape"])
        spare = infos[f"arrays/{i}.npy"].file_size - count * np.dtype(entry["dtype"]).itemsize
        if not _NPY_HEADER_BYTES[0] <= spare <= _NPY_HEADER_BYTES[1]:
            raise _invalid(file, f"array {i} of shape {tuple(entry['shape'])} does not fit its member")
        shapes.append(tuple(entry["shape"]))
    references = []
    for section in ("params", "attributes"):
        if not isinstance(metadata.get(section), dict):
            raise _invalid(file, f"its metadata has no {section}")
        try:
            for value in metadata[section].values():
                _collect_references(value, references)
        except ValueError as error:
            raise _invalid(file, f"its metadata is malformed ({error})") from None
    if sorted(index for _, index in references) != list(range(len(table))):
        raise _invalid(file, "its arrays are not each used exactly once")
    objects = sum(math.prod(shapes[index]) for tag, index in references if tag == "object_array")
    if objects > MAX_OBJECT_VALUES:
        raise _invalid(file, f"it holds {objects} labels or names, more than {MAX_OBJECT_VALUES}")
    problem = _declared_shape_problem(metadata["attributes"], shapes)
    if problem:
        raise _invalid(file, problem)
    return table


def _collect_references(value, references, depth=0):
    """Append ``(tag, index)`` for every array a metadata value refers to (its structure is checked
    again when it is decoded)."""
    if depth > 32:
        raise ValueError("metadata nested deeper than 32 levels")
    if isinstance(value, dict) and len(value) == 1:
        ((tag, content),) = value.items()
        if tag in ("array", "object_array"):
            if not isinstance(content, int) or isinstance(content, bool):
                raise ValueError(f"an array reference {content!r} is not an index")
            references.append((tag, content))
        elif isinstance(content, list):
            for item in content:
                _collect_references(item, references, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _collect_references(item, references, depth + 1)


def _declared_shape_problem(attributes, shapes):
    """What is wrong with the declared shapes of the arrays prediction uses, or None: from the
    metadata's counts (n_features_in_, classes, prototypes) alone, before any array is read."""

    def shape(name):
        value = attributes.get(name)
        if isinstance(value, dict) and len(value) == 1:
            ((tag, index),) = value.items()
            if tag in ("array", "object_array") and 0 <= index < len(shapes):
                return shapes[index]
        return None

    d = attributes.get("n_features_in_")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        return f"n_features_in_ must be a positive integer, not {d!r}"
    classes, prototypes = shape("classes_"), shape("prototypes_")
    if classes is None or prototypes is None:
        return None  # not arrays: refused once decoded, with the other fitted attributes
    if len(classes) != 1:
        return f"classes_ has shape {classes}, expected a 1-D array"
    if len(prototypes) != 2 or prototypes[1] != d:
        return f"prototypes_ has shape {prototypes}, expected ({prototypes[0]}, {d})"
    expected = {
        "logits_": (prototypes[0], classes[0]),
        "patched_prototypes_": (prototypes[0],),
        "prototype_reach_": (prototypes[0],),
        "feature_scales_": (d,),
        "feature_names_in_": (d,),
    }
    for name, wanted in expected.items():
        if shape(name) is not None and shape(name) != wanted:
            return f"{name} has shape {shape(name)}, expected {wanted}"
    return None


def _read_array(file, archive, info, entry):
    """One array: its member's bytes (as many as the directory declares, which the table check
    matched to the declared shape), their digest, then the .npy header against the declared dtype
    and shape, then the data."""
    data = _member(archive, info)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise _invalid(file, "an array does not match its SHA-256")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"npy format version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream, max_header_size=10_000)
    except ValueError as error:  # object arrays, malformed headers and short data alike
        raise _invalid(file, f"an array cannot be read without pickle ({error})") from error
    expected = np.dtype(entry["dtype"])
    if (
        dtype.kind not in _ARRAY_KINDS
        or dtype.fields is not None
        or dtype != expected
        or list(shape) != entry["shape"]
        or len(data) - stream.tell() != math.prod(shape) * dtype.itemsize
    ):
        raise _invalid(file, f"an array of dtype {dtype} and shape {shape} is not what its metadata says")
    count = math.prod(shape)
    array = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell()) if count else np.empty(0, dtype)
    return array.reshape(shape, order="F" if fortran_order else "C").copy()  # owned and writable


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
    """A model saved before raw tables gets the state of an all-numeric table that was not standardised
    (and, saved before logarithmic scales, none)."""
    d = clf.n_features_in_
    defaults = {
        "is_categorical_": np.zeros(d, dtype=bool),
        "categories_": [],
        "feature_means_": np.zeros(d),
        "feature_stds_": np.ones(d),
        "log_units_": np.zeros(d),
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
    units = clf.log_units_
    if not isinstance(units, np.ndarray) or units.dtype != np.float64 or units.shape != (d,):
        return f"log_units_ must be a float64 array of shape ({d},)"
    if not np.all(np.isfinite(units) & (units >= 0)) or np.any(units[mask] != 0):
        return "log_units_ must be finite, positive for features on a logarithmic scale and 0 elsewhere"
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
    """What is wrong with a loaded model's fitted state, or None: every fitted attribute the
    estimator sets, of its type and shape, and the invariants that prediction relies on; then a
    prediction at the prototypes, which must be finite."""
    required = ["classes_", "n_features_in_", "prototypes_", "logits_", "patched_prototypes_", "power_"]
    missing = [name for name in required if not hasattr(clf, name)]
    if missing:
        return f"it lacks the fitted attributes {missing}"
    classes, prototypes, logits = clf.classes_, clf.prototypes_, clf.logits_
    d = clf.n_features_in_
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        return f"n_features_in_ must be a positive integer, not {d!r}"
    if not isinstance(classes, np.ndarray) or classes.ndim != 1 or len(classes) < 2:
        return "classes_ must be a 1-D array of at least 2 labels"
    if any(isinstance(c, float | np.floating) and not math.isfinite(c) for c in classes.tolist()):
        return "classes_ holds NaN or infinity"
    if not np.array_equal(np.unique(classes), classes):
        return "classes_ must hold distinct labels in increasing order"
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
    # Training keeps the scales within e^±MAX_LOG_SCALE (computed in float32: a little slack).
    low, high = math.exp(-MAX_LOG_SCALE) * (1 - 1e-6), math.exp(MAX_LOG_SCALE) * (1 + 1e-6)
    if not np.all(np.isfinite(scales) & (scales > 0)) or not np.all((low <= scales) & (scales <= high)):
        return f"feature_scales_ must be positive and finite, between {low:.3g} and {high:.3g} as training keeps them"
    problem = _attention_problem(clf, d)
    if problem:
        return problem
    problem = _patches_problem(clf)
    if problem:
        return problem
    names = getattr(clf, "feature_names_in_", None)
    if names is not None and (
        not isinstance(names, np.ndarray) or names.shape != (d,) or not all(isinstance(n, str) for n in names)
    ):
        return f"feature_names_in_ must hold {d} names"
    problem = _bookkeeping_problem(clf)
    if problem:
        return problem
    # The checks above cannot see every combination that overflows (prototypes at 1e200 are finite,
    # but their squared distances are not): the model must predict finite values at its prototypes.
    probe = prototypes[: 2**6]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the probe has no feature names
            finite = np.all(np.isfinite(clf.predict_proba(probe)))
    except ValueError as error:
        return f"it predicts no finite probabilities at its own prototypes ({error})"
    return None if finite else "it predicts no finite probabilities at its own prototypes"


def _patches_problem(clf):
    """The prototypes' reaches and the log of patches (both absent from files older than them: every
    reach infinite, no log)."""
    m = len(clf.prototypes_)
    reach = getattr(clf, "prototype_reach_", None)
    if reach is None:
        clf.prototype_reach_ = reach = np.full(m, np.inf)
    if not isinstance(reach, np.ndarray) or reach.dtype != np.float64 or reach.shape != (m,):
        return f"prototype_reach_ must be a float64 array of shape ({m},)"
    if np.any(np.isnan(reach)) or np.any(reach < 0):
        return "prototype_reach_ must be non-negative (inf: unbounded)"
    if not np.isinf(reach).any():
        return "prototype_reach_ must hold at least one inf (a prototype that every row attends to)"
    if not np.isinf(reach).all() and clf.attention_ not in BOUNDED_ATTENTIONS:
        return f"prototype_reach_ must be all inf for attention={clf.attention_!r}, which has no distance"
    log = getattr(clf, "patches_", None)
    if log is None:
        clf.patches_ = clf._no_patches()
        return None
    kinds = {"index": "iu", "label": None, "radius": "f", "margin": "f", "replaced": "b"}
    if not isinstance(log, dict) or set(log) != set(kinds):
        return f"patches_ must be a dict of the arrays {sorted(kinds)}"
    lengths = {len(v) if isinstance(v, np.ndarray) and v.ndim == 1 else -1 for v in log.values()}
    if len(lengths) != 1 or -1 in lengths:
        return "patches_ must hold 1-D arrays of equal length"
    for name, kind in kinds.items():
        if kind is not None and log[name].dtype.kind not in kind:
            return f"patches_[{name!r}] has dtype {log[name].dtype}"
    index = log["index"]
    if np.any((index < 0) | (index >= m)) or len(np.unique(index)) != len(index):
        return f"patches_['index'] must hold distinct prototype indices in [0, {m})"
    if not np.isin(log["label"], clf.classes_).all():
        return "patches_['label'] must hold labels among classes_"
    if np.any(np.isnan(log["radius"])) or np.any(log["radius"] <= 0):
        return "patches_['radius'] must be positive (inf: unbounded)"
    from .classifier import MAX_MARGIN  # loaded with the classifier being checked

    if not np.all((log["margin"] > 0) & (log["margin"] <= MAX_MARGIN)):
        return f"patches_['margin'] must lie in (0, {MAX_MARGIN:g}]"
    return None


def _attention_problem(clf, d):
    """The fitted score, eps and the score's learned parameters: those the score defines, of its shapes."""
    attention = clf.attention_
    if not isinstance(attention, str) or attention not in ATTENTIONS:
        return f"attention_ must be one of {sorted(ATTENTIONS)}, not {attention!r}"
    try:
        validate_parameter_constraints({"eps_": type(clf)._parameter_constraints["eps"]}, {"eps_": clf.eps_}, "eps_")
    except ValueError as error:
        return str(error)
    if isinstance(clf.eps_, bool):
        return f"eps_ must be a number, not {clf.eps_!r}"
    params = getattr(clf, "attention_params_", {})
    if not isinstance(params, dict):
        return f"attention_params_ must be a dict of arrays, not {type(params).__name__}"
    entry = ATTENTIONS[attention]
    expected = (
        {name: tuple(t.shape) for name, t in entry(d).state_dict().items()}
        if isinstance(entry, type) and issubclass(entry, nn.Module)
        else {}
    )
    if set(params) != set(expected):
        found = sorted(map(str, params))
        return f"attention_params_ must hold {sorted(expected)} for attention={attention!r}, not {found}"
    for name, array in params.items():
        if (
            not isinstance(array, np.ndarray)
            or array.dtype.kind != "f"
            or array.shape != expected[name]
            or not np.all(np.isfinite(array))
        ):
            return f"attention_params_[{name!r}] must be a finite float array of shape {expected[name]}"
    return None


def _bookkeeping_problem(clf):
    """The training record that partial_fit continues: counts and lists of numbers."""

    def number(value):
        return isinstance(value, Real) and not isinstance(value, bool)

    def numbers(value):
        return isinstance(value, list) and all(number(v) for v in value)

    n_iter = getattr(clf, "n_iter_", 0)
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 0:
        return f"n_iter_ must be a non-negative integer, not {n_iter!r}"
    if not numbers(getattr(clf, "loss_curve_", [])):
        return "loss_curve_ must be a list of numbers"
    validation = getattr(clf, "validation_scores_", None)
    if validation is not None and not numbers(validation):
        return "validation_scores_ must be None or a list of numbers"
    best = getattr(clf, "best_validation_score_", None)
    if best is not None and not number(best):
        return "best_validation_score_ must be None or a number"
    return None
