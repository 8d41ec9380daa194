"""Model files: save/load round trips, refusal of damaged or hostile files, version warnings."""

import hashlib
import io
import json
import pickle
import warnings
import zipfile

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

import protoattn
from protoattn import IDWAttentionClassifier, InconsistentVersionWarning


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
        (_replace_array("feature_scales_", np.ones(3)), r"feature_scales_ must be a float64 array of shape \(4,\)"),
        (_replace_array("classes_", np.array([1, 1, 2])), "distinct"),
        (_set_attribute("n_features_in_", 5), r"prototypes_ has shape \(6, 4\), expected \(6, 5\)"),
        (_set_attribute("power_", -1.0), "power_"),
        (_set_attribute("predict", 1), "not a fitted attribute"),
        (_set_attribute("__class__", 1), "not a fitted attribute"),
        (_set_attribute("logits_", {"bogus": 1}), "malformed"),
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
