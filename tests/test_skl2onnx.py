"""skl2onnx converts pipelines that hold the classifier, once protoattn.onnx is imported, and the ONNX
graph gives the pipeline's own predictions and probabilities under onnxruntime."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from protoattn import ATTENTIONS, IDWAttentionClassifier

ort = pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")
import protoattn.onnx  # noqa: E402, F401  (registers the converter: what this module tests)
from protoattn.export import export_onnx  # noqa: E402

X, Y = load_iris(return_X_y=True)
NAMES = np.array(["setosa", "versicolor", "virginica"])


def pipeline(attention="idw", y=Y, **params):
    clf = IDWAttentionClassifier(attention=attention, n_prototypes=6, max_epochs=10, random_state=0, **params)
    return make_pipeline(StandardScaler(), clf).fit(X, y)


def run(onx, X):
    session = ort.InferenceSession(onx.SerializeToString())
    return session.run(None, {session.get_inputs()[0].name: X})


@pytest.mark.parametrize("attention", sorted(ATTENTIONS))
def test_every_attention_converts_within_a_pipeline(attention):
    # Integer labels for half the scores, strings for the others; float32 and float64 graphs alike.
    strings = sorted(ATTENTIONS).index(attention) % 2 == 1
    model = pipeline(attention, NAMES[Y] if strings else Y)
    for dtype in (np.float32, np.float64):
        onx = skl2onnx.to_onnx(model, X[:1].astype(dtype), options={"zipmap": False})
        label, probabilities = run(onx, X.astype(dtype))
        np.testing.assert_allclose(probabilities, model.predict_proba(X), atol=1e-5 if dtype == np.float32 else 1e-10)
        np.testing.assert_array_equal(label, model.predict(X))


def test_zipmap_gives_a_dictionary_per_row_keyed_by_label():
    model = pipeline(y=NAMES[Y])
    label, probabilities = run(skl2onnx.to_onnx(model, X[:1].astype(np.float32)), X[:3].astype(np.float32))
    assert list(label) == list(model.predict(X[:3]))
    assert [sorted(row) for row in probabilities] == [list(NAMES)] * 3
    np.testing.assert_allclose(
        [[row[c] for c in NAMES] for row in probabilities], model.predict_proba(X[:3]), atol=1e-5
    )


def test_the_classifier_alone_two_classes_and_a_patch():
    clf = IDWAttentionClassifier(n_prototypes=4, max_epochs=10, random_state=0).fit(X, np.where(Y > 0, 7, 3))
    clf.add_prototype(X[60], 3)
    onx = skl2onnx.to_onnx(clf, X[:1], options={"zipmap": False})  # float64
    label, probabilities = run(onx, X)
    np.testing.assert_allclose(probabilities, clf.predict_proba(X), atol=1e-10)
    np.testing.assert_array_equal(label, clf.predict(X))
    assert label[60] == 3


def test_a_score_of_ones_own_converts_as_torch_traces_it():
    def score(X, K):  # negative Manhattan distance
        return -(X[:, None, :] - K[None, :, :]).abs().sum(-1)

    model = pipeline(score)
    label, probabilities = run(
        skl2onnx.to_onnx(model, X[:1].astype(np.float32), options={"zipmap": False}), X.astype(np.float32)
    )
    np.testing.assert_allclose(probabilities, model.predict_proba(X), atol=1e-5)


def test_an_opset_too_old_for_the_exporter_is_refused_clearly():
    with pytest.raises(ValueError, match="operator set 18 or later"):
        skl2onnx.to_onnx(pipeline(), X[:1].astype(np.float32), target_opset=15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_export_onnx_writes_a_whole_pipeline(dtype, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = pipeline(y=NAMES[Y])
    path = export_onnx(model, tmp_path / "pipeline.onnx", dtype=dtype)
    session = ort.InferenceSession(str(path))
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
    label, probabilities = session.run(None, {"X": X.astype(dtype)})
    np.testing.assert_allclose(probabilities, model.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(label, model.predict(X))
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["classes"]) == list(NAMES) and metadata["protoattn_version"]


def test_export_onnx_names_what_it_takes():
    with pytest.raises(TypeError, match="IDWAttentionClassifier or a Pipeline that ends in one, got StandardScaler"):
        export_onnx(StandardScaler().fit(X), "unused.onnx")
