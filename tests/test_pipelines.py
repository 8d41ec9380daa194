"""explain, attention_weights and the plots take a fitted Pipeline whose last step is the classifier."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import protoattn  # noqa: E402
from protoattn import IDWAttentionClassifier  # noqa: E402
from protoattn.plotting import plot_attention, plot_explanation, plot_feature_terms, plot_prototypes  # noqa: E402


@pytest.fixture(scope="module")
def model():
    X, y = load_iris(return_X_y=True, as_frame=True)
    return make_pipeline(StandardScaler(), IDWAttentionClassifier(n_prototypes=6, random_state=0)).fit(X, y), X


def test_explain_through_a_pipeline_speaks_the_inputs_units(model):
    pipeline, X = model
    clf = pipeline[-1]
    why = protoattn.explain(pipeline, X.iloc[[0, 100]], top_k=2)
    direct = clf.explain(pipeline[0].transform(X.iloc[[0, 100]]), top_k=2)
    np.testing.assert_array_equal(why.prototype_indices, direct.prototype_indices)
    np.testing.assert_allclose(why.feature_terms, direct.feature_terms)
    np.testing.assert_allclose(why.prototypes, pipeline[0].inverse_transform(clf.prototypes_))
    np.testing.assert_allclose(why.samples.astype(float), X.iloc[[0, 100]].to_numpy())
    assert list(why.feature_names) == list(X.columns) and why.index.tolist() == [0, 100]
    frame = why.feature_frame(1)
    assert frame["prototype"].between(X.min().min(), X.max().max()).all()  # centimetres, not z-scores
    weights = protoattn.attention_weights(pipeline, X.iloc[:3])
    np.testing.assert_allclose(weights, clf.attention_weights(pipeline[0].transform(X.iloc[:3])))


def test_every_plot_takes_the_pipeline(model):
    pipeline, X = model
    heatmap = plot_prototypes(pipeline)
    values = heatmap.axes[0].images[0].get_array()
    assert np.nanmax(values) <= X.max().max()  # drawn in centimetres
    assert plot_attention(pipeline, X.iloc[0]).get_title().startswith("attention of sample 0")
    assert plot_explanation(pipeline, X.iloc[0]).axes[-1].get_title().startswith("predicted")
    assert "squared distance" in plot_feature_terms(pipeline, X.iloc[0]).get_title()
    with pytest.raises(TypeError, match="Pipeline whose last step"):
        protoattn.explain(make_pipeline(StandardScaler()).fit(X), X)
    plt.close("all")
