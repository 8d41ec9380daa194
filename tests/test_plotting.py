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
from sklearn.preprocessing import StandardScaler

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
    """The points drawn under a legend label: the data of a class, or the prototypes (by gid)."""
    by_gid = [c for c in ax.collections if c.get_gid() == label]
    return (by_gid or [c for c in ax.collections if c.get_label() == label])[0]


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
    assert fig.get_suptitle() == f"the {len(clf.prototypes_)} prototypes, one row per class (1 patched, in magenta)"


def test_prototype_images_have_full_contrast_on_one_stated_scale(digits):
    clf, _, _ = digits
    # The pixels' range in the data: digits' background is white and their strokes black.
    fig = plot_prototypes(
        clf,
        image_shape=(8, 8),
        class_names=[f"digit {c}" for c in range(10)],
        vmin=0,
        vmax=16,
        unit="pixel intensity, 0-16",
    )
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert {image.get_clim() for image in images} == {(0.0, 16.0)}
    (colorbar,) = [image.colorbar for image in images if image.colorbar is not None]  # one for all
    assert colorbar.ax.get_ylabel() == "prototype value (pixel intensity, 0-16)"
    assert colorbar.extend == "neither"  # prototypes stay within the pixels' training range: no arrows
    ncols = fig.axes[0].get_gridspec().ncols
    assert [fig.axes[r * ncols].get_ylabel() for r in range(10)] == [f"digit {c}" for c in range(10)]
    # By default the scale spans the bulk of the values, not the few extreme ones.
    default = plot_prototypes(clf, image_shape=(8, 8))
    clims = {ax.images[0].get_clim() for ax in default.axes if ax.images}
    np.testing.assert_allclose(list(clims), [np.percentile(clf.prototypes_, [2, 98])])
    assert default.axes[-1].get_ylabel() == "prototype value (in the features' units)"


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
    patched = len(clf.prototypes_) - 1
    assert rows == [f"#{i}  {clf.prototype_labels_[i]}" + ("  (patched)" if i == patched else "") for i in order]
    marked_rows = [t.get_text() for t in ax.get_yticklabels() if to_rgba(t.get_color()) == PATCHED]
    assert marked_rows == [f"#{patched}  2  (patched)"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("feature", "prototype (class)")
    assert ax.get_title() == "the 7 prototypes, grouped by class (1 patched, in magenta)"
    named = plot_prototypes(clf, feature_names=["a", "b", "c", "d"]).axes[0]
    assert [t.get_text() for t in named.get_xticklabels()] == ["a", "b", "c", "d"]


def test_prototype_heatmap_names_classes_and_states_units():
    X, y = load_tabular("wine", return_X_y=True)
    X = StandardScaler().fit_transform(X)
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=5, random_state=0).fit(X, y)
    order = np.argsort(clf.prototype_labels_, kind="stable")
    cultivars = ["Barolo", "Grignolino", "Barbera"]
    for names in (cultivars, dict(enumerate(cultivars))):
        fig = plot_prototypes(clf, class_names=names, unit="z-score")
        ax = fig.axes[0]
        rows = [t.get_text() for t in ax.get_yticklabels()]
        assert rows == [f"#{i}  {cultivars[clf.prototype_labels_[i]]}" for i in order]
        (image,) = ax.images
        assert image.colorbar.ax.get_ylabel() == "prototype value (z-score)"
        low, high = image.get_clim()
        assert low == -high  # white is 0: red above, blue below
    assert plot_prototypes(clf).axes[0].images[0].colorbar.ax.get_ylabel() == (
        "prototype value (in the features' units)"
    )


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


def test_decision_regions_are_labelled_with_a_legend_of_classes_and_a_title(patched, moons):
    _, X, y = moons
    ax = plot_decision_regions(patched, X, y)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x0", "x1")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "prototypes", "patched prototypes"]
    assert ax.get_title() == f"predicted classes of {len(patched.prototypes_)} prototypes"
    ax = plot_decision_regions(
        patched, X, y, class_names={0: "upper moon", 1: "lower moon"}, feature_names=["u", "v"], title="moons"
    )
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("u", "v", "moons")
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "upper moon",
        "lower moon",
        "prototypes",
        "patched prototypes",
    ]
    # Each class's legend entry has its colour (the colour of its region).
    np.testing.assert_allclose(
        legend.legend_handles[0].get_facecolor()[0], _scatter(ax, "upper moon").get_facecolor()[0]
    )
    # For several panels: no legend on each, the same entries for one shared legend.
    bare = plot_decision_regions(patched, X, y, legend=False)
    assert bare.get_legend() is None
    assert bare.get_legend_handles_labels()[1] == ["0", "1", "prototypes", "patched prototypes"]
    # The prototypes' entries are white stand-ins: the prototypes come in both classes' colours.
    assert [tuple(h.get_facecolor()[0]) for h in legend.legend_handles[2:]] == [to_rgba("white")] * 2


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
    assert not [c for c in right.collections if "patched prototypes" in (c.get_label(), c.get_gid())]


def test_prototypes_outside_the_view_are_counted(moons):
    clf, X, y = moons
    far = clone(clf).fit(X, y)
    far.add_prototype([40.0, 40.0], 0)
    ax = plot_decision_regions(far, X, y)
    assert [t.get_text() for t in ax.texts] == ["1 prototype outside the view"]
    assert not plot_decision_regions(clf, X, y).texts


def test_attention_shows_the_top_k_prototypes_labelled_by_class(digits):
    clf, X, _ = digits
    names = [f"digit {c}" for c in range(10)]
    ax = plot_attention(clf, X[0], top_k=4, name="image 0", class_names=names)
    weights = clf.attention_weights(X[:1])[0]
    top = np.argsort(-weights, kind="stable")[:4]
    assert len(ax.patches) == 4  # the top 4 of the model's 21 prototypes only, largest first
    np.testing.assert_allclose([bar.get_width() for bar in ax.patches], weights[top])
    codes = np.argmax(clf.logits_, axis=1)
    expected = [f"#{i} (class {names[codes[i]]}{', patched' if clf.patched_prototypes_[i] else ''})" for i in top]
    assert [t.get_text() for t in ax.get_yticklabels()] == expected
    # X[0] was patched to class 1, so the patched prototype takes its attention and is marked.
    assert expected[0] == f"#{len(clf.prototypes_) - 1} (class digit 1, patched)"
    marked = [to_rgba(bar.get_edgecolor()) == PATCHED for bar in ax.patches]
    assert marked == clf.patched_prototypes_[top].tolist()
    assert ax.get_title() == "attention of image 0: predicted digit 1"
    share = weights[top].sum()
    assert ax.get_xlabel() == f"attention weight (these 4 of {len(weights)} prototypes hold {share:.1%} of it)"
    assert ax.get_ylabel() == "prototype (class)"


def test_attention_title_names_the_sample(moons):
    clf, X, _ = moons
    assert plot_attention(clf, X[3]).get_title() == f"attention of the sample: predicted {clf.predict(X[3:4])[0]}"
    assert len(plot_attention(clf, X[3], top_k=100).patches) == len(clf.prototypes_)
    frame = pd.DataFrame(X, columns=["a", "b"], index=[f"p{i}" for i in range(len(X))])
    refit = IDWAttentionClassifier(n_prototypes=4, max_epochs=5, random_state=0).fit(frame, np.asarray(X[:, 0] > 0))
    assert plot_attention(refit, frame.iloc[3]).get_title().startswith("attention of sample p3: predicted ")
    assert plot_attention(refit, frame.iloc[[5]]).get_title().startswith("attention of sample p5: predicted ")


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
    named = plot_explanation(patched, X[[7]], top_k=3, class_names=["upper", "lower"]).axes[0]
    names = np.array(["upper", "lower"])[np.searchsorted(patched.classes_, e.prototype_labels[0])]
    labels = [
        f"#{i} (class {n}), weight {w:.3f}" for i, n, w in zip(e.prototype_indices[0], names, e.weights[0], strict=True)
    ]
    assert [t.get_text() for t in named.get_yticklabels()][:3] == labels
    predicted = ["upper", "lower"][int(e.predicted[0])]
    assert named.get_title() == f"predicted {predicted}: logit {e.logit[0]:.3f} = sum of the bars"
    assert named.get_xlabel().startswith(f"contribution to the logit of class {predicted}")


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
    # One grey scale, the input's: full contrast for it, and the prototypes comparable with it.
    clims = {ax.images[0].get_clim() for ax in fig.axes if ax.images}
    assert clims == {(X[0].min(), X[0].max())}
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
        (lambda c, X, y: plot_prototypes(c, class_names=["a", "b"]), ValueError, "2 names.*10 classes"),
        (lambda c, X, y: plot_prototypes(c, class_names="abcdefghij"), ValueError, "list of names or a dict"),
        (lambda c, X, y: plot_prototypes(c, (8, 8), vmin=3, vmax=3), ValueError, "vmin must be smaller"),
        (lambda c, X, y: plot_attention(c, X[:2]), ValueError, "one sample"),
        (lambda c, X, y: plot_attention(c, X[0], top_k=0), ValueError, "top_k"),
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


def test_feature_terms_plot_reads_one_explanation_feature_by_feature():
    from palmerpenguins import load_penguins

    from protoattn.plotting import plot_feature_terms

    table = load_penguins()
    X, y = table.drop(columns="species"), table["species"]
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=20, random_state=0).fit(X, y)
    sample = X.iloc[3]  # only island and year observed
    ax = plot_feature_terms(clf, sample)
    frame = clf.explain(X.iloc[[3]], top_k=1).feature_frame(0)
    widths = [bar.get_width() for bar in ax.patches]
    np.testing.assert_allclose(widths, frame["term"])
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert labels[0].startswith(frame["feature"][0]) and any("missing vs" in label for label in labels)
    assert "squared distance" in ax.get_title() and ax.get_xlabel().startswith("term of the squared distance")
    with pytest.raises(ValueError, match="rank"):
        plot_feature_terms(clf, sample, rank=len(clf.prototypes_))
    plt.close("all")


def test_prototypes_of_a_table_with_categories_point_to_their_frame():
    from palmerpenguins import load_penguins

    table = load_penguins()
    clf = IDWAttentionClassifier(max_epochs=2, random_state=0).fit(table.drop(columns="species"), table["species"])
    with pytest.raises(ValueError, match="prototypes_frame"):
        plot_prototypes(clf)
