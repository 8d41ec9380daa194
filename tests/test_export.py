"""The ONNX export runs in onnxruntime and gives the estimator's own probabilities."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

from protoattn import IDWAttentionClassifier
from protoattn.export import export_onnx

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), np.array(["setosa", "versicolor", "virginica"])[y]


@pytest.mark.parametrize(
    "attention, dtype", [("idw", "float32"), ("idw", "float64"), ("kernel", "float32"), ("relu", "float64")]
)
def test_onnx_probabilities_match_predict_proba(iris, attention, dtype, tmp_path):
    X, y = iris
    clf = IDWAttentionClassifier(attention=attention, n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
    clf.add_prototype(X[0], "virginica")
    path = export_onnx(clf, tmp_path / "model.onnx", dtype=dtype)
    session = ort.InferenceSession(str(path))
    Xd = X.astype(dtype)
    logits, probabilities = session.run(["logits", "probabilities"], {"X": Xd})
    np.testing.assert_allclose(probabilities, clf.predict_proba(Xd), atol=1e-5 if dtype == "float32" else 1e-10)
    np.testing.assert_allclose(logits, clf.decision_function(Xd), rtol=1e-5, atol=1e-4)
    assert session.run(["probabilities"], {"X": Xd[:1]})[0].shape == (1, 3)  # any number of rows


def test_onnx_metadata_maps_outputs_to_labels(iris, tmp_path):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
    path = export_onnx(clf, tmp_path / "model.onnx")
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    classes = np.array(json.loads(metadata["classes"]))
    probabilities = ort.InferenceSession(str(path)).run(["probabilities"], {"X": X.astype(np.float32)})[0]
    np.testing.assert_array_equal(classes[probabilities.argmax(1)], clf.predict(X.astype(np.float32)))
    assert metadata["protoattn_version"]


def test_export_refuses_unfitted_model_and_bad_dtype(iris, tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        export_onnx(IDWAttentionClassifier(), tmp_path / "x.onnx")
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=3, max_epochs=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="dtype"):
        export_onnx(clf, tmp_path / "x.onnx", dtype="int8")


def test_a_model_with_categorical_features_says_how_to_export(tmp_path):
    import pandas as pd
    from palmerpenguins import load_penguins

    table = load_penguins()
    clf = IDWAttentionClassifier(max_epochs=2, random_state=0).fit(table.drop(columns="species"), table["species"])
    with pytest.raises(ValueError, match="categorical ones \\(island, sex\\).*OrdinalEncoder"):
        export_onnx(clf, tmp_path / "m.onnx")
    assert isinstance(clf.prototypes_frame(), pd.DataFrame)


def test_onnx_computes_logarithmic_scales_as_the_model_does(tmp_path):
    rng = np.random.default_rng(0)
    X = np.column_stack([np.exp(rng.normal(8, 1.5, 300)), rng.normal(size=300)])
    y = (np.log(X[:, 0]) + X[:, 1] > 8).astype(int)
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=20, random_state=0).fit(X, y)
    assert clf.log_units_[0] > 0 and clf.log_units_[1] == 0
    session = ort.InferenceSession(str(export_onnx(clf, tmp_path / "model.onnx", dtype="float64")))
    (probabilities,) = session.run(["probabilities"], {"X": X})
    np.testing.assert_allclose(probabilities, clf.predict_proba(X), atol=1e-10)
