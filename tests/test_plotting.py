"""protoattn.plotting: what each display draws, rendered with the Agg backend."""

import subprocess
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.contour import ContourSet
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression

from protoattn import IDWAttentionClassifier
from protoattn.datasets import load_moons_split, load_tabular
from protoattn.plotting import (
    PATCHED_COLOR,
    plot_attention,
    plot_decision_regions,
    plot_explanation,
    plot_prototypes,
)

matplotlib.use("Agg")
PATCHED = to_rgba(PATCHED_COLOR)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def moons():
    X_train, _, y_train, _ = load_moons_split()
    clf = IDWAttentionClassifier(n_prototypes=8, max_epochs=30, random_state=0).fit(X_train, y_train)
    return clf, X_train, y_train


@pytest.fixture(scope="module")
def patched(moons):
    clf, X, y = moons
    clf = clone(clf).fit(X, y)
    clf.add_prototype([0.0, 1.0], 1)
    clf.add_prototype([1.0, 0.0], 0)
    return clf


@pytest.fixture(scope="module")
def digits():
    X, y = load_tabular("digits", return_X_y=True)
    clf = IDWAttentionClassifier(n_prototypes=20, max_epochs=5, random_state=0).fit(X, y)
    clf.add_prototype(X[0], 1)
    return clf, X, y


def _scatter(ax, label):
    return next(c for c in ax.collections if c.get_label() == label)


def test_prototype_images_one_per_prototype_in_rows_by_class(digits):
    clf, _, _ = digits
    fig = plot_prototypes(clf, image_shape=(8, 8))
    drawn = [(ax, ax.images[0]) for ax in fig.axes if ax.images]
    assert len(drawn) == len(clf.prototypes_)
    for ax, image in drawn:
        index = int(ax.get_title().lstrip("#"))
        np.testing.assert_array_equal(image.get_array(), clf.prototypes_[index].reshape(8, 8))
        # Each image sits in its class's row, whose first axes is labelled with the class.
        row = ax.get_subplotspec().rowspan.start
        assert str(clf.prototype_labels_[index]) == fig.axes[row * fig.axes[0].get_gridspec().ncols].get_ylabel()
        framed = all(spine.get_edgecolor() == PATCHED for spine in ax.spines.values())
        assert framed == clf.patched_prototypes_[index]
    assert sum(clf.patched_prototypes_) == 1


def test_prototype_heatmap_rows_sorted_by_class_with_feature_names():
    X, y = load_tabular("wine", return_X_y=True)
    frame = pd.DataFrame(X[:, :4], columns=["alcohol", "malic", "ash", "alcalinity"])
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=5, random_state=0).fit(frame, y)
    clf.add_prototype(frame.iloc[0], 2)
    fig = plot_prototypes(clf)
    (ax, *_) = fig.axes
    (image,) = ax.images
    order = np.argsort(np.argmax(clf.logits_, axis=1), kind="stable")
    np.testing.assert_array_equal(image.get_array(), clf.prototypes_[order])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["alcohol", "malic", "ash", "alcalinity"]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == [f"#{i}  {clf.prototype_labels_[i]}" for i in order]
    marked_rows = [t.get_text() for t in ax.get_yticklabels() if to_rgba(t.get_color()) == PATCHED]
    assert marked_rows == [f"#{len(clf.prototypes_) - 1}  2"]
    named = plot_prototypes(clf, feature_names=["a", "b", "c", "d"]).axes[0]
    assert [t.get_text() for t in named.get_xticklabels()] == ["a", "b", "c", "d"]


def test_decision_regions_mark_data_prototypes_and_patches(patched, moons):
    _, X, y = moons
    clf = patched
    ax = plot_decision_regions(clf, X, y)
    for label in clf.classes_:
        np.testing.assert_array_equal(_scatter(ax, str(label)).get_offsets(), X[y == label])
    trained = _scatter(ax, "prototypes")
    np.testing.assert_array_equal(trained.get_offsets(), clf.prototypes_[~clf.patched_prototypes_])
    stars = _scatter(ax, "patched prototypes")
    np.testing.assert_array_equal(stars.get_offsets(), [[0.0, 1.0], [1.0, 0.0]])
    assert all(tuple(edge) == PATCHED for edge in stars.get_edgecolors())
    assert not any(tuple(edge) == PATCHED for edge in trained.get_edgecolors())
    # Each class has one colour: its region, its dots, its prototypes.
    dots = np.array([_scatter(ax, str(label)).get_facecolors()[0] for label in clf.classes_])
    np.testing.assert_allclose(stars.get_facecolors(), dots[[1, 0]])
    (regions,) = [c for c in ax.collections if isinstance(c, ContourSet)]
    np.testing.assert_allclose(regions.to_rgba(regions.layers)[:, :3], dots[:, :3])


def test_decision_regions_multiclass_and_given_axes():
    X, y = load_tabular("iris", return_X_y=True)
    X = X[:, :2]
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
    fig, (left, right) = plt.subplots(1, 2)
    assert plot_decision_regions(clf, X, y, ax=right) is right
    assert not left.collections
    dots = np.array([_scatter(right, str(label)).get_facecolors()[0] for label in clf.classes_])
    (regions,) = [c for c in right.collections if isinstance(c, ContourSet)]
    np.testing.assert_allclose(regions.to_rgba(regions.layers)[:, :3], dots[:, :3])
    assert len(_scatter(right, "prototypes").get_offsets()) == 6
    assert not [c for c in right.collections if c.get_label() == "patched prototypes"]


def test_prototypes_outside_the_view_are_counted(moons):
    clf, X, y = moons
    far = clone(clf).fit(X, y)
    far.add_prototype([40.0, 40.0], 0)
    ax = plot_decision_regions(far, X, y)
    assert [t.get_text() for t in ax.texts] == ["1 prototype outside the view"]
    assert not plot_decision_regions(clf, X, y).texts


def test_attention_bars_are_the_weights(patched, moons):
    _, X, _ = moons
    ax = plot_attention(patched, X[3])
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, patched.attention_weights(X[3:4])[0])
    marked = [to_rgba(bar.get_edgecolor()) == PATCHED for bar in ax.patches]
    assert marked == patched.patched_prototypes_.tolist()
    assert ax.get_title() == f"predicted {patched.predict(X[3:4])[0]}"


def test_explanation_bars_add_up_to_the_logit(patched, moons):
    _, X, _ = moons
    fig = plot_explanation(patched, X[[7]], top_k=3)
    (ax,) = fig.axes
    widths = [bar.get_width() for bar in ax.patches]
    e = patched.explain(X[[7]], top_k=3)
    assert len(widths) == 4  # top 3 and the rest
    np.testing.assert_allclose(widths[:3], e.contributions[0])
    np.testing.assert_allclose(sum(widths), e.logit[0])
    assert ax.get_yticklabels()[-1].get_text() == f"the other {len(patched.prototypes_) - 3} prototypes"


def test_explanation_with_images_shows_the_input_and_top_prototypes(digits):
    clf, X, _ = digits
    fig = plot_explanation(clf, X[0], top_k=4, image_shape=(8, 8))
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    e = clf.explain(X[:1], top_k=4)
    assert len(images) == 5
    np.testing.assert_array_equal(images[0], X[0].reshape(8, 8))
    for image, index in zip(images[1:], e.prototype_indices[0], strict=True):
        np.testing.assert_array_equal(image, clf.prototypes_[index].reshape(8, 8))
    assert len(fig.axes[-1].patches) == 5
    # X[0] was patched to class 1, so the patched prototype explains it and is framed in the patched colour.
    assert e.predicted[0] == 1 and clf.patched_prototypes_[e.prototype_indices[0, 0]]


def test_one_sample_from_a_dataframe_keeps_its_feature_names():
    X, y = load_tabular("iris", return_X_y=True)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = IDWAttentionClassifier(n_prototypes=3, max_epochs=5, random_state=0).fit(frame, y)
    with np.testing.assert_no_warnings():
        plot_attention(clf, frame.iloc[0])
        plot_explanation(clf, frame.iloc[[0]])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda c, X, y: plot_prototypes(c, image_shape=(7, 9)), ValueError, "63 pixels.*64 features"),
        (lambda c, X, y: plot_prototypes(c, image_shape=(64,)), ValueError, "height, width"),
        (lambda c, X, y: plot_prototypes(c, image_shape=(8.0, 8.0)), ValueError, "height, width"),
        (lambda c, X, y: plot_prototypes(c, feature_names=["a"]), ValueError, "1 names.*64 features"),
        (lambda c, X, y: plot_prototypes(c, (8, 8), ["a"] * 64), ValueError, "not both"),
        (lambda c, X, y: plot_decision_regions(c, X, y), ValueError, "2 features; this one has 64"),
        (lambda c, X, y: plot_attention(c, X[:2]), ValueError, "one sample"),
        (lambda c, X, y: plot_attention(c, X[0, :10]), ValueError, "features"),
        (lambda c, X, y: plot_explanation(c, X[0], top_k=0), ValueError, "top_k"),
        (lambda c, X, y: plot_explanation(c, X[0], image_shape=(4, 4)), ValueError, "16 pixels"),
    ],
)
def test_bad_arguments_are_named(digits, call, error, match):
    clf, X, y = digits
    with pytest.raises(error, match=match):
        call(clf, X, y)
    assert not plt.get_fignums()  # nothing half-drawn is left open


@pytest.mark.parametrize("plot", [plot_prototypes, lambda c: plot_attention(c, [0.0, 0.0])])
def test_unfitted_or_foreign_models_are_refused(plot):
    with pytest.raises(NotFittedError):
        plot(IDWAttentionClassifier())
    with pytest.raises(TypeError, match="IDWAttentionClassifier.*LogisticRegression"):
        plot(LogisticRegression())


def test_decision_region_data_must_match_the_model(moons):
    clf, X, y = moons
    with pytest.raises(ValueError, match="2 columns"):
        plot_decision_regions(clf, np.hstack([X, X]), y)
    with pytest.raises(ValueError, match="one label per row"):
        plot_decision_regions(clf, X, y[:-1])
    with pytest.raises(ValueError, match=r"does not know: \[7\]"):
        plot_decision_regions(clf, X, np.where(y == 1, 7, 0))
    assert not plt.get_fignums()


def test_package_imports_without_matplotlib():
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import protoattn, protoattn.plotting, protoattn.datasets\n"
        "from protoattn.datasets import load_moons_split\n"
        "X, _, y, _ = load_moons_split()\n"
        "clf = protoattn.IDWAttentionClassifier(n_prototypes=2, max_epochs=1).fit(X, y)\n"
        "try:\n"
        "    protoattn.plotting.plot_prototypes(clf)\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'protoattn[plot]'" in result.stdout
