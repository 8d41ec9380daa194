"""Model files: save/load round trips, refusal of damaged or hostile files, version warnings."""

import contextlib
import hashlib
import io
import json
import os
import pickle
import stat
import struct
import threading
import warnings
import zipfile
import zlib

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

import protoattn
from protoattn import IDWAttentionClassifier, InconsistentVersionWarning, _persistence


def _saved(clf):
    buffer = io.BytesIO()
    clf.save(buffer)
    return buffer.getvalue()


def _load(data):
    return IDWAttentionClassifier.load(io.BytesIO(data))


def _public(clf):
    # Private attributes (the optimiser's state for partial_fit) are not part of the model file.
    return {name: value for name, value in vars(clf).items() if not name.startswith("_")}


def _assert_same_model(a, b, X):
    assert a.get_params() == b.get_params()
    assert sorted(_public(a)) == sorted(_public(b))
    for name, value in _public(a).items():
        loaded = getattr(b, name)
        assert type(loaded) is type(value), name
        if isinstance(value, np.ndarray):
            assert loaded.dtype == value.dtype, name
            np.testing.assert_array_equal(loaded, value)
        elif isinstance(value, dict):
            assert value.keys() == loaded.keys()
            for key in value:
                np.testing.assert_array_equal(loaded[key], value[key])
        else:
            assert loaded == value, name
    for method in ["predict", "predict_proba", "decision_function", "attention_weights"]:
        expected, got = getattr(a, method)(X), getattr(b, method)(X)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(b.explain(X).contributions, a.explain(X).contributions)


LABELS = {
    "int": np.array([3, 5, 7]),
    "float": np.array([-1.0, 0.0, 2.0]),
    "str": np.array(["setosa", "versicolor", "virginica"]),
    "object str": np.array(["setosa", "versicolor", "virginica"], dtype=object),
}


@pytest.mark.parametrize("kind", sorted(LABELS))
def test_round_trip_is_identical_for_every_label_kind(iris, tmp_path, kind):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=5, random_state=0).fit(X, LABELS[kind][y])
    clf.save(tmp_path / "model.protoattn")
    _assert_same_model(clf, IDWAttentionClassifier.load(tmp_path / "model.protoattn"), X)


def test_round_trip_with_bool_labels_feature_names_and_a_patch(iris):
    X, y = iris
    frame = pd.DataFrame(X, columns=["sepal length", "sepal width", "petal length", "petal width"])
    clf = IDWAttentionClassifier(n_prototypes=4, max_epochs=5, early_stopping=True, random_state=0)
    clf.fit(frame, y == 2)
    clf.add_prototype(frame.iloc[0], True)
    clf.remove_prototypes([1])
    loaded = _load(_saved(clf))
    _assert_same_model(clf, loaded, frame)
    np.testing.assert_array_equal(loaded.feature_names_in_, frame.columns)
    assert loaded.patched_prototypes_.sum() == 1


def test_hyperparameters_survive_including_class_weight_and_a_random_state_object(iris):
    X, y = iris
    clf = IDWAttentionClassifier(
        n_prototypes=5,
        attention="gaussian",
        power=3.0,
        eps=0.0,
        max_epochs=4,
        batch_size=32,
        class_weight={0: 2.0, 1: 1.0, 2: 0.5},
        random_state=np.random.RandomState(7),
    ).fit(X, y)
    loaded = _load(_saved(clf))
    original, restored = clf.get_params(), loaded.get_params()
    original_state, restored_state = original.pop("random_state"), restored.pop("random_state")
    assert restored == original
    for a, b in zip(original_state.get_state(), restored_state.get_state(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Refitting the loaded model continues the same random stream as refitting the original would.
    np.testing.assert_array_equal(loaded.fit(X, y).prototypes_, clf.fit(X, y).prototypes_)


def test_file_is_plain_zip_of_npy_and_json(fitted):
    with zipfile.ZipFile(io.BytesIO(_saved(fitted))) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        assert metadata["protoattn_version"] == protoattn.__version__
        assert metadata["params"]["n_prototypes"] == 6
        for i in range(len(metadata["arrays"])):
            np.lib.format.read_array(io.BytesIO(archive.read(f"arrays/{i}.npy")), allow_pickle=False)


def test_unfitted_model_is_not_saved(tmp_path):
    with pytest.raises(NotFittedError):
        IDWAttentionClassifier().save(tmp_path / "model.protoattn")
    assert not list(tmp_path.iterdir())


def test_user_attention_function_is_refused_and_nothing_is_written(iris, tmp_path):
    X, y = iris
    clf = IDWAttentionClassifier(attention=lambda X, K: -(X @ K.T), n_prototypes=3, max_epochs=2).fit(X, y)
    with pytest.raises(TypeError, match="attention is a Python function.*joblib"):
        clf.save(tmp_path / "model.protoattn")
    assert not list(tmp_path.iterdir())


def test_attribute_that_is_not_data_is_refused_by_name(fitted):
    clf = _load(_saved(fitted))
    clf.calibrator_ = object()
    with pytest.raises(TypeError, match="calibrator_"):
        _saved(clf)


def test_failed_save_keeps_the_previous_file(fitted, iris, tmp_path, monkeypatch):
    X, _ = iris
    path = tmp_path / "model.protoattn"
    fitted.save(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.protoattn"]
    np.testing.assert_array_equal(IDWAttentionClassifier.load(path).predict(X), fitted.predict(X))


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        IDWAttentionClassifier.load(tmp_path / "nothing.protoattn")


@pytest.mark.parametrize("keep", [0, 10, 0.25, 0.5, 0.9, -23, -1])
def test_truncated_file_is_refused(fitted, keep):
    data = _saved(fitted)
    end = keep if isinstance(keep, int) else int(keep * len(data))
    with pytest.raises(ValueError, match="Cannot load"):
        _load(data[:end])


def test_any_flipped_byte_is_refused_or_harmless(fitted, iris):
    X, _ = iris
    data = _saved(fitted)
    expected = fitted.predict_proba(X)
    refused = 0
    for offset in np.random.default_rng(0).choice(len(data), 300, replace=False):
        damaged = bytearray(data)
        damaged[offset] ^= 0x5A
        try:
            loaded = _load(bytes(damaged))
        except ValueError as error:
            assert "Cannot load" in str(error)
            refused += 1
        else:  # zip headers hold fields nothing reads (timestamps, extra fields)
            np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    assert refused > 250


def _rewrite(data, edit, rehash):
    """Apply ``edit(metadata, arrays)`` to a saved model; with ``rehash``, recompute every digest."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["metadata.json"])
    arrays = {name: data for name, data in members.items() if name.startswith("arrays/")}
    edit(metadata, arrays)
    if rehash:
        for i, entry in enumerate(metadata["arrays"]):
            entry["sha256"] = hashlib.sha256(arrays[f"arrays/{i}.npy"]).hexdigest()
    text = json.dumps(metadata).encode()
    members = {"metadata.json": text, **arrays}
    members["metadata.sha256"] = hashlib.sha256(text).hexdigest().encode() if rehash else b"0" * 64
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # stored, like save
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _npy(array, allow_pickle=False):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _array_index(metadata, attribute):
    return metadata["attributes"][attribute]["array"]


def _replace_array(attribute, array):
    def edit(metadata, arrays):
        i = _array_index(metadata, attribute)
        arrays[f"arrays/{i}.npy"] = _npy(array)
        metadata["arrays"][i].update(dtype=array.dtype.str, shape=list(array.shape))

    return edit


def test_edited_array_is_refused_by_its_digest(fitted):
    edit = _replace_array("prototypes_", np.zeros_like(fitted.prototypes_))
    with pytest.raises(ValueError, match="SHA-256"):
        _load(_rewrite(_saved(fitted), edit, rehash=False))


def test_edited_metadata_is_refused_by_its_digest(fitted):
    def edit(metadata, arrays):
        metadata["params"]["eps"] = 0.5

    with pytest.raises(ValueError, match="SHA-256"):
        _load(_rewrite(_saved(fitted), edit, rehash=False))


CALLED = []


def _mark(tag):
    CALLED.append(tag)


class _Payload:
    """Unpickling this calls ``_mark``: in a real attack, any function, such as ``os.system``."""

    def __reduce__(self):
        return _mark, ("unpickled",)


def test_pickled_object_array_is_refused_without_running_it(fitted):
    CALLED.clear()

    def edit(metadata, arrays):
        i = _array_index(metadata, "prototypes_")
        arrays[f"arrays/{i}.npy"] = _npy(np.array([_Payload()], dtype=object), allow_pickle=True)
        metadata["arrays"][i].update(dtype="|O", shape=[1])

    data = _rewrite(_saved(fitted), edit, rehash=True)
    with pytest.raises(ValueError, match="without pickle"):
        _load(data)
    assert CALLED == []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # the payload is live: pickle would have run it
        member = archive.read(f"arrays/{_array_index(json.loads(archive.read('metadata.json')), 'prototypes_')}.npy")
    np.lib.format.read_array(io.BytesIO(member), allow_pickle=True)
    assert CALLED == ["unpickled"]


def _set_attribute(name, value):
    def edit(metadata, arrays):
        metadata["attributes"][name] = value

    return edit


def _set_param(name, value):
    def edit(metadata, arrays):
        metadata["params"][name] = value

    return edit


def _set(key, value):
    def edit(metadata, arrays):
        metadata[key] = value

    return edit


@pytest.mark.parametrize(
    "edit, reason",
    [
        (_replace_array("prototypes_", np.full((6, 4), np.nan)), "prototypes_ holds NaN"),
        (_replace_array("logits_", np.full((6, 3), np.inf)), "logits_ holds NaN or infinity"),
        (_replace_array("logits_", np.zeros((5, 3))), r"logits_ has shape \(5, 3\)"),
        (_replace_array("prototypes_", np.zeros((6, 4), dtype=np.float32)), "2-D float64"),
        (_replace_array("patched_prototypes_", np.zeros(6)), "patched_prototypes_"),
        (_replace_array("feature_scales_", np.array([1.0, 0.0, 1.0, 1.0])), "feature_scales_ must be positive"),
        (_replace_array("feature_scales_", np.ones(3)), r"feature_scales_ has shape \(3,\), expected \(4,\)"),
        (_replace_array("classes_", np.array([1, 1, 2])), "distinct"),
        (_set_attribute("n_features_in_", 5), r"prototypes_ has shape \(6, 4\), expected \(6, 5\)"),
        (_set_attribute("power_", -1.0), "power_"),
        (_set_attribute("predict", 1), "not a fitted attribute"),
        (_set_attribute("__class__", 1), "not a fitted attribute"),
        (_set_attribute("logits_", {"bogus": 1}), "not each used exactly once"),  # logits_'s array is orphaned
        (_set_param("attention", "evil"), "attention"),
        (_set_param("backdoor", 1), "unknown to protoattn"),
        (_set("format_version", 99), "newer"),
        (_set("format", "something-else"), "not a protoattn model file"),
        (_set("estimator", "MLPClassifier"), "not a IDWAttentionClassifier"),
    ],
)
def test_consistently_edited_but_invalid_file_is_refused(fitted, edit, reason):
    with pytest.raises(ValueError, match=reason):
        _load(_rewrite(_saved(fitted), edit, rehash=True))


def test_extra_or_compressed_member_is_refused(fitted):
    buffer = io.BytesIO(_saved(fitted))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("payload.pkl", pickle.dumps(_Payload()))
    with pytest.raises(ValueError, match="members"):
        _load(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(_saved(fitted))) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(ValueError, match="compressed"):
        _load(buffer.getvalue())


def test_same_version_loads_and_unpickles_silently(fitted):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(_saved(fitted))
        pickle.loads(pickle.dumps(fitted))


def test_model_from_another_version_warns_on_load(fitted, iris, monkeypatch):
    X, _ = iris
    data, version = _saved(fitted), protoattn.__version__
    monkeypatch.setattr(protoattn, "__version__", "99.0")
    with pytest.warns(InconsistentVersionWarning, match=f"made by protoattn {version} with protoattn 99.0") as record:
        loaded = _load(data)
    assert record[0].message.original_version == version and record[0].message.current_version == "99.0"
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))


def test_pickle_from_another_version_warns_on_unpickle(fitted, iris, monkeypatch):
    X, _ = iris
    buffer = io.BytesIO()
    joblib.dump(fitted, buffer)
    version = protoattn.__version__
    monkeypatch.setattr(protoattn, "__version__", "99.0")
    with pytest.warns(InconsistentVersionWarning, match=f"protoattn {version} "):
        buffer.seek(0)
        loaded = joblib.load(buffer)
    assert "_protoattn_version" not in vars(loaded)
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    assert issubclass(InconsistentVersionWarning, UserWarning)


def test_pickle_that_records_no_version_warns(fitted):
    state = fitted.__getstate__()
    del state["_protoattn_version"]
    clf = IDWAttentionClassifier.__new__(IDWAttentionClassifier)
    with pytest.warns(InconsistentVersionWarning, match="made by protoattn unknown"):
        clf.__setstate__(state)
    np.testing.assert_array_equal(clf.prototypes_, fitted.prototypes_)


# ------------------------------------------------------------------ bounded work on hostile files


class _CountingBytes(io.BytesIO):
    """A file object that counts the bytes read from it."""

    read_bytes = 0

    def read(self, size=-1):
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_an_array_used_many_times_is_refused_before_any_is_read(fitted):
    # {"object_array": k} a thousand times made load convert one array a thousand times (one 8 MB
    # array took 8.2 GB); every array is used once, and that is checked before any is read.
    def edit(metadata, arrays):
        reference = metadata["attributes"]["classes_"]
        metadata["attributes"]["labels_"] = {"list": [reference] * 1000}

    with pytest.raises(ValueError, match="not each used exactly once"):
        _load(_rewrite(_saved(fitted), edit, rehash=True))


def _local_header(name, data):
    """A stored member's local header: version 2.0, no flags, a fixed date, CRC, sizes, the name."""
    crc, size = zlib.crc32(data), len(data)
    return (
        struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0x21, crc, size, size, len(name), 0) + name.encode()
    )


def _central_entry(name, data, offset):
    """The central directory's entry for a stored member whose local header is at ``offset``."""
    crc, size = zlib.crc32(data), len(data)
    fields = (20, 3, 20, 0, 0, 0, 0, 0x21, crc, size, size, len(name), 0, 0, 0, 0, 0, offset)
    return struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", *fields) + name.encode()


def _overlapping_archive(n_arrays, payload_bytes):
    """A stored zip whose array members overlap: each one's data is a valid uint8 .npy that holds the
    local headers and data of all the members after it (a "quoted overlap" zip bomb), so that the
    members together are n_arrays times larger than the file."""
    tail = _npy(np.zeros(payload_bytes, dtype=np.uint8))
    datas = [tail]
    for _ in range(n_arrays - 1):
        inner = _local_header(f"arrays/{n_arrays - len(datas)}.npy", datas[-1]) + datas[-1]
        header = np.lib.format.header_data_from_array_1_0(np.zeros(0, dtype=np.uint8))
        prefix = io.BytesIO()
        np.lib.format.write_array_header_1_0(prefix, dict(header, shape=(len(inner),)))
        datas.append(prefix.getvalue() + inner)
    datas.reverse()  # datas[i] is the data of arrays/i.npy
    table = [{"dtype": "|u1", "shape": list(_npy_shape(d)), "sha256": hashlib.sha256(d).hexdigest()} for d in datas]
    metadata = {
        "format": "protoattn-model",
        "format_version": 1,
        "protoattn_version": protoattn.__version__,
        "estimator": "IDWAttentionClassifier",
        "params": {},
        "attributes": {f"junk{i}_": {"array": i} for i in range(n_arrays)},
        "arrays": table,
    }
    text = json.dumps(metadata).encode()
    members = [("metadata.json", text), ("metadata.sha256", hashlib.sha256(text).hexdigest().encode())]
    body, directory = b"", b""
    for name, data in members:
        directory += _central_entry(name, data, len(body))
        body += _local_header(name, data) + data
    offset = len(body)
    for i, data in enumerate(datas):
        directory += _central_entry(f"arrays/{i}.npy", data, offset)
        if i + 1 < n_arrays:  # the next header is inside this data, after its .npy header
            inner = len(_local_header(f"arrays/{i + 1}.npy", datas[i + 1])) + len(datas[i + 1])
            offset += len(_local_header(f"arrays/{i}.npy", data)) + len(data) - inner
    body += _local_header("arrays/0.npy", datas[0]) + datas[0]
    entries = len(members) + n_arrays
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries, len(directory), len(body), 0)
    return body + directory + end


def _npy_shape(data):
    stream = io.BytesIO(data)
    np.lib.format.read_magic(stream)
    return np.lib.format.read_array_header_1_0(stream)[0]


def test_overlapping_members_are_refused_after_reading_only_the_directory():
    data = _overlapping_archive(40, 200_000)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # the bomb works: its members add up to 40 times the file
        assert sum(info.file_size for info in archive.infolist()) > 30 * len(data)
        assert len(archive.read("arrays/39.npy")) > 200_000
    stream = _CountingBytes(data)
    with pytest.raises(ValueError, match="overlaps"):
        IDWAttentionClassifier.load(stream)
    assert stream.read_bytes < 20_000  # the directory and the end record, no member


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused_without_reading_it(path):
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    with pytest.raises(ValueError, match="not a regular file"):
        IDWAttentionClassifier.load(path)


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a regular file but a directory"):
        IDWAttentionClassifier.load(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "model.protoattn"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            IDWAttentionClassifier.load(fifo)
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():  # blocked in open(): a writer unblocks it, then fail
        with open(fifo, "wb"):
            pass
        thread.join(30)
        pytest.fail("load blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError) and "not a regular file" in str(outcome[0])


def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(fitted, tmp_path, monkeypatch):
    path = tmp_path / "model.protoattn"
    fitted.save(path)
    monkeypatch.setattr(_persistence, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(ValueError, match=f"has {path.stat().st_size} bytes, more than a model file may"):
        IDWAttentionClassifier.load(path)
    with pytest.raises(ValueError, match="more than a model file may"):
        IDWAttentionClassifier.load(io.BytesIO(path.read_bytes()))


def test_a_model_beyond_the_limits_is_not_saved(fitted, tmp_path, monkeypatch):
    monkeypatch.setattr(_persistence, "MAX_METADATA_BYTES", 100)
    with pytest.raises(ValueError, match="beyond what load accepts"):
        fitted.save(tmp_path / "model.protoattn")
    assert not list(tmp_path.iterdir())


def _set_array_shape(attribute, shape):
    """Declare another shape for an array (its member unchanged)."""

    def edit(metadata, arrays):
        metadata["arrays"][_array_index(metadata, attribute)]["shape"] = shape

    return edit


@pytest.mark.parametrize(
    "edit, reason",
    [
        (_set_array_shape("prototypes_", [10**9, 4]), "does not fit its member"),
        (_set_array_shape("prototypes_", [-6, 4]), "malformed"),
        (_set_array_shape("prototypes_", [6, True]), "malformed"),
        (_set_attribute("classes_", {"array": 99}), "not each used exactly once"),
        (_set_attribute("classes_", {"array": True}), "not an index"),
        (_replace_array("feature_scales_", np.ones(5)), r"feature_scales_ has shape \(5,\), expected \(4,\)"),
    ],
)
def test_declared_sizes_are_checked_against_the_members_and_the_metadata_before_reading(fitted, edit, reason):
    with pytest.raises(ValueError, match=reason):
        _load(_rewrite(_saved(fitted), edit, rehash=True))


@pytest.fixture(scope="module")
def kernel_model(iris):
    X, y = iris
    return IDWAttentionClassifier(attention="kernel", n_prototypes=6, max_epochs=3, random_state=0).fit(X, y)


def _scale_array(attribute, factor):
    def edit(metadata, arrays):
        i = _array_index(metadata, attribute)
        array = np.lib.format.read_array(io.BytesIO(arrays[f"arrays/{i}.npy"])) * factor
        arrays[f"arrays/{i}.npy"] = _npy(array)

    return edit


def _kernel_param(name, value):
    def edit(metadata, arrays):
        pairs = metadata["attributes"]["attention_params_"]["dict"]
        if value is None:
            metadata["attributes"]["attention_params_"]["dict"] = [p for p in pairs if p[0] != name]
            for _, reference in [p for p in pairs if p[0] == name]:  # its array, now unused, goes too
                metadata["attributes"]["orphan_"] = reference
            return
        for pair in pairs:
            if pair[0] == name:
                i = pair[1]["array"]
                arrays[f"arrays/{i}.npy"] = _npy(value)
                metadata["arrays"][i].update(dtype=value.dtype.str, shape=list(value.shape))

    return edit


WRONG_TYPES = [
    ("fitted", _set_attribute("attention_params_", 5), "attention_params_ must be a dict"),
    ("fitted", _set_attribute("n_features_in_", True), "n_features_in_ must be a positive integer"),
    ("fitted", _set_attribute("n_features_in_", 4.0), "n_features_in_ must be a positive integer"),
    ("fitted", _set_attribute("power_", True), "power_"),
    ("fitted", _set_attribute("n_iter_", "10"), "n_iter_"),
    ("fitted", _set_attribute("loss_curve_", {"list": ["a"]}), "loss_curve_"),
    ("fitted", _set_attribute("attention_", "evil"), "attention_ must be one of"),
    ("fitted", _set_attribute("eps_", 1e300), "eps_"),
    ("fitted", _set("format_version", 0), "format version 0 is not a positive integer"),
    ("fitted", _set("format_version", -1), "format version -1 is not a positive integer"),
    ("fitted", _set("format_version", True), "format version True is not a positive integer"),
    ("fitted", _replace_array("classes_", np.array([0.0, 1.0, np.nan])), "classes_ holds NaN"),
    ("fitted", _replace_array("classes_", np.array([2, 1, 0])), "increasing order"),
    ("fitted", _scale_array("prototypes_", 1e200), "no finite probabilities at its own prototypes"),
    ("fitted", _scale_array("feature_scales_", 1e300), "feature_scales_ must be positive and finite, between"),
    ("kernel", _kernel_param("log_scales", np.zeros((4, 3))), r"attention_params_\['log_scales'\].*shape \(4, 4\)"),
    ("kernel", _kernel_param("log_scales", None), r"attention_params_ must hold \['log_scales', 'mixture_logits'\]"),
    ("kernel", _kernel_param("mixture_logits", np.zeros(4, dtype=np.int64)), "finite float array"),
    ("kernel", _kernel_param("log_scales", np.full((4, 4), 1e3)), "no finite probabilities"),
    ("fitted", _set_attribute("attention_params_", {"dict": [["bias", 1.0]]}), r"must hold \[\] for attention='idw'"),
]


@pytest.mark.parametrize("model, edit, reason", WRONG_TYPES)
def test_wrong_typed_or_absurd_fields_are_refused_at_load(fitted, kernel_model, model, edit, reason):
    clf = kernel_model if model == "kernel" else fitted
    with pytest.raises(ValueError, match=reason):
        _load(_rewrite(_saved(clf), edit, rehash=True))


@pytest.mark.parametrize("model, edit, reason", WRONG_TYPES)
def test_the_command_line_refuses_every_such_file_in_one_line(fitted, kernel_model, model, edit, reason, tmp_path):
    from protoattn.cli import main

    clf = kernel_model if model == "kernel" else fitted
    path = tmp_path / "model.protoattn"
    path.write_bytes(_rewrite(_saved(clf), edit, rehash=True))
    rows = tmp_path / "rows.csv"
    pd.DataFrame(np.zeros((2, 4)), columns=[f"x{i}" for i in range(4)]).to_csv(rows, index=False)
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        assert main(["predict", str(path), str(rows)]) == 2
    lines = errors.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protoattn: error: Cannot load")


def test_files_without_the_fitted_score_load_with_their_parameters(fitted, iris):
    # Files of this format written before attention_ and eps_ were fitted attributes.
    X, _ = iris

    def edit(metadata, arrays):
        del metadata["attributes"]["attention_"], metadata["attributes"]["eps_"]

    loaded = _load(_rewrite(_saved(fitted), edit, rehash=True))
    assert loaded.attention_ == "idw" and loaded.eps_ == fitted.eps
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


def test_a_valid_kernel_model_round_trips(kernel_model, iris):
    X, _ = iris
    _assert_same_model(kernel_model, _load(_saved(kernel_model)), X)


# ------------------------------------------------------------------------------ what save replaces


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_save_keeps_the_permissions_of_the_file_it_replaces(fitted, tmp_path):
    path = tmp_path / "model.protoattn"
    path.write_bytes(b"old")
    path.chmod(0o600)
    fitted.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o640)
    fitted.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    IDWAttentionClassifier.load(path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_save_writes_through_a_symbolic_link(fitted, iris, tmp_path):
    X, _ = iris
    target = tmp_path / "models" / "v1.protoattn"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "current.protoattn"
    link.symlink_to(target)
    fitted.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(IDWAttentionClassifier.load(target).predict(X), fitted.predict(X))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["current.protoattn", "models", "v1.protoattn"]
