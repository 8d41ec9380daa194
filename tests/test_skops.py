"""skops (and so mlflow, which saves scikit-learn models with skops) loads protoattn models with one
documented argument, ``trusted=protoattn.SKOPS_TRUSTED_TYPES``."""

import copy

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import protoattn
from protoattn import IDWAttentionClassifier

sio = pytest.importorskip("skops.io")


def iris_frame():
    X, y = load_iris(return_X_y=True, as_frame=True)
    return X.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_")), np.array(["a", "b", "c"])[y]


def small(**params):
    return IDWAttentionClassifier(**{"n_prototypes": 6, "max_epochs": 5, "random_state": 0, **params})


def stream():
    X, y = iris_frame()
    return small().partial_fit(X[::2], y[::2], classes=["a", "b", "c"]).partial_fit(X[1::2], y[1::2])


def patched():
    X, y = iris_frame()
    clf = small().fit(X, y)
    clf.add_prototype(X.iloc[0], "c")
    return clf


# One of each kind of fitted state: plain fit on an array, learned attention parameters, a stream's
# optimiser state, early stopping's validation scores with class weights, patches, float32 input with
# random initialisation. When the estimator gains a kind of state, add a model here: the first test
# then recomputes what skops asks to trust.
MODELS = {
    "fit": lambda: small().fit(*load_iris(return_X_y=True)),
    "kernel": lambda: small(attention="kernel").fit(*iris_frame()),
    "partial_fit": stream,
    "early_stopping": lambda: small(early_stopping=True, class_weight="balanced").fit(*iris_frame()),
    "patched": patched,
    "float32": lambda: small(metric="euclidean", init="random").fit(
        load_iris().data.astype(np.float32), load_iris().target
    ),
}


@pytest.fixture(scope="module")
def models():
    return {name: make() for name, make in MODELS.items()}


def features(model):
    X, _ = iris_frame()
    return X if hasattr(model, "feature_names_in_") else X.to_numpy()


def round_trip(model):
    return sio.loads(sio.dumps(model), trusted=protoattn.SKOPS_TRUSTED_TYPES)


def test_trusted_types_are_exactly_what_skops_asks_for(models):
    asked = set()
    for model in models.values():
        asked |= set(sio.get_untrusted_types(data=sio.dumps(model)))
    assert isinstance(protoattn.SKOPS_TRUSTED_TYPES, tuple)
    assert set(protoattn.SKOPS_TRUSTED_TYPES) == asked


def test_without_them_skops_refuses_to_load(models):
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match="IDWAttentionClassifier"):
        sio.loads(sio.dumps(models["fit"]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_round_trip_predicts_identically(models, name):
    model = models[name]
    loaded = round_trip(model)
    X = features(model)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.patched_prototypes_, model.patched_prototypes_)
    assert loaded.get_params() == model.get_params()


def test_a_loaded_model_can_be_patched_and_trained_further(models):
    model = models["partial_fit"]
    X, y = iris_frame()
    loaded = round_trip(model)
    x = X.iloc[[60]]
    assert loaded.predict(x)[0] == "b"
    assert loaded.add_prototype(x.iloc[0], "a") == len(model.prototypes_)
    assert loaded.predict(x)[0] == "a" and loaded.patched_prototypes_[-1]
    # partial_fit resumes from the saved state, Adam's moments included, exactly as on the original.
    resumed = round_trip(model).partial_fit(X, y)
    np.testing.assert_array_equal(resumed.prototypes_, copy.deepcopy(model).partial_fit(X, y).prototypes_)


def test_a_pipeline_with_the_classifier_needs_no_other_types():
    X, y = iris_frame()
    model = make_pipeline(StandardScaler(), small()).fit(X, y)
    data = sio.dumps(model)
    assert set(sio.get_untrusted_types(data=data)) <= set(protoattn.SKOPS_TRUSTED_TYPES)
    loaded = sio.loads(data, trusted=protoattn.SKOPS_TRUSTED_TYPES)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_a_file_loads_with_the_types_as_a_list_as_mlflow_passes_them(tmp_path, models):
    model = models["kernel"]
    sio.dump(model, tmp_path / "model.skops")
    loaded = sio.load(tmp_path / "model.skops", trusted=list(protoattn.SKOPS_TRUSTED_TYPES))
    for name, value in model.attention_params_.items():
        np.testing.assert_array_equal(loaded.attention_params_[name], value)
    np.testing.assert_array_equal(loaded.predict_proba(features(model)), model.predict_proba(features(model)))
