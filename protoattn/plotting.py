"""Matplotlib displays of a fitted :class:`~protoattn.IDWAttentionClassifier` (the ``plot`` extra).

matplotlib is imported inside the functions, so ``import protoattn`` never needs it. Each function returns
what it drew on (a Figure, or the Axes it was given or made) and never calls ``plt.show()``. Every display
labels its axes, states the units of its colour scale and names classes by ``class_names`` when given (the
labels of ``clf.classes_`` otherwise), so that a figure can be read without the code that made it. Colours
are per class and shared by all displays; prototypes placed by ``add_prototype`` are outlined in magenta.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from numbers import Integral

import numpy as np
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from .classifier import IDWAttentionClassifier, _in_input_units, _pipeline_parts, explain

__all__ = ["plot_attention", "plot_decision_regions", "plot_explanation", "plot_feature_terms", "plot_prototypes"]

#: Edge colour of the prototypes placed by ``add_prototype`` (no class colour is close to it).
PATCHED_COLOR = "magenta"

# Above this many rows or columns, a heatmap's ticks are left to matplotlib instead of naming each one.
_MAX_NAMED_TICKS = 60

# Default ends of a colour scale, as percentiles of the prototypes' values: a few extreme values (k-means
# centres pushed past the data by training) would otherwise wash out every other prototype.
_ROBUST_RANGE = (2, 98)


def plot_prototypes(clf, image_shape=None, feature_names=None, *, class_names=None, unit=None, vmin=None, vmax=None):
    """The prototypes grouped by class: images when ``image_shape`` is given, else a heatmap.

    Parameters
    ----------
    clf : fitted IDWAttentionClassifier, or a fitted Pipeline whose last step is one
    image_shape : (height, width) or None, default=None
        Draw each prototype as a grey image of this shape (``height * width == n_features_in_``): one row
        of images per class, each titled with the prototype's index, dark for large values.
    feature_names : list of str or None, default=None
        Column names of the heatmap; default ``clf.feature_names_in_`` if the model was fitted on a
        DataFrame, else ``x0, x1, ...``. Rows are the prototypes sorted by class, labelled
        ``#index class``.
    class_names : list of str, dict or None, default=None
        Names of the classes, in the order of ``clf.classes_`` (a list) or by label (a dict), e.g. a
        data set's ``target_names`` for a model fitted on codes 0, 1, ...; default the labels themselves.
    unit : str or None, default=None
        What the values measure, for the colour bar's label, e.g. ``"z-score"`` behind a
        ``StandardScaler`` or ``"pixel intensity"``; default "in the features' units".
    vmin, vmax : float or None, default=None
        Ends of the colour scale; values beyond are drawn in the end colours (the colour bar shows an
        arrow). Default: the 2nd and 98th percentiles of all prototype values. The heatmap widens the
        range to be symmetric about 0 when it holds 0, so that white is 0 (red above, blue below).

    Returns
    -------
    matplotlib.figure.Figure
        Titled, with a colour bar labelled "prototype value (unit)".
    """
    _, _, clf = _unpipe(clf)  # prototypes in the input units of a pipeline, where it maps them back
    if clf.is_categorical_.any():
        raise ValueError(
            "plot_prototypes draws numeric features, and this model has categorical ones: read them with "
            "clf.prototypes_frame(), or draw one explanation feature by feature with plot_feature_terms."
        )
    names = _class_names(clf, class_names)
    plt = _pyplot()
    label = "prototype value " + (f"({unit})" if unit else "(in the features' units)")
    if image_shape is not None:
        if feature_names is not None:
            raise ValueError("Pass image_shape (images) or feature_names (heatmap), not both.")
        shape = _check_image_shape(image_shape, clf.n_features_in_)
        return _prototype_images(clf, shape, names, label, _value_range(clf.prototypes_, vmin, vmax), plt)
    features = _feature_names(clf, feature_names)
    return _prototype_heatmap(clf, features, names, label, _value_range(clf.prototypes_, vmin, vmax), plt)


def _prototype_images(clf, shape, names, label, value_range, plt):
    groups = _groups_by_class(clf)
    n_cols = max(max(len(group) for group in groups), 1)
    fig, axes = plt.subplots(
        len(groups),
        n_cols,
        figsize=(0.9 * n_cols + 2.0, 1.0 * len(groups) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    vmin, vmax = value_range
    image = None
    for name, group, row in zip(names, groups, axes, strict=True):
        row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=11)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
        for ax, i in zip(row, group, strict=False):
            # One grey scale for all, so that prototypes can be compared pixel by pixel.
            image = ax.imshow(clf.prototypes_[i].reshape(shape), cmap="gray_r", vmin=vmin, vmax=vmax)
            ax.set_frame_on(True)
            ax.set_title(f"#{i}", fontsize=8)
            if clf.patched_prototypes_[i]:
                _mark_patched(ax)
    fig.colorbar(
        image, ax=axes, label=label, shrink=min(1.0, 4 / len(groups)), extend=_extend(clf.prototypes_, vmin, vmax)
    )
    fig.suptitle(f"the {len(clf.prototypes_)} prototypes, one row per class" + _patched_note(clf))
    return fig


def _mark_patched(ax):
    for spine in ax.spines.values():
        spine.set_edgecolor(PATCHED_COLOR)
        spine.set_linewidth(2.5)
    ax.title.set_color(PATCHED_COLOR)


def _prototype_heatmap(clf, features, names, label, value_range, plt):
    groups = _groups_by_class(clf)
    order = np.concatenate(groups)
    values = clf.prototypes_[order]
    m, d = values.shape
    codes = _prototype_codes(clf)
    rows = [f"#{i}  {names[codes[i]]}" + ("  (patched)" if clf.patched_prototypes_[i] else "") for i in order]
    # Room for the rotated feature names below the rows and the prototype names left of them (about 0.09
    # inch per character).
    label_room = 0.09 * max(len(name) for name in features) if d <= _MAX_NAMED_TICKS else 0.5
    row_room = 0.08 * max(len(row) for row in rows) if m <= _MAX_NAMED_TICKS else 0.5
    fig, ax = plt.subplots(
        figsize=(min(3 + row_room + 0.3 * d, 16), min(1.6 + 0.3 * m + label_room, 24)), layout="constrained"
    )
    low, high = value_range
    if low < 0 < high:
        top = max(-low, high)
        image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
    else:
        image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
    fig.colorbar(image, ax=ax, label=label, extend=_extend(values, *image.get_clim()))
    if d <= _MAX_NAMED_TICKS:
        ax.set_xticks(np.arange(d), labels=features, rotation=90)
    if m <= _MAX_NAMED_TICKS:
        ax.set_yticks(np.arange(m), labels=rows)
        for tick, i in zip(ax.get_yticklabels(), order, strict=True):
            if clf.patched_prototypes_[i]:
                tick.set_color(PATCHED_COLOR)
    for boundary in np.cumsum([len(group) for group in groups])[:-1]:
        ax.axhline(boundary - 0.5, color="black", linewidth=1.5)
    ax.set_xlabel("feature")
    ax.set_ylabel("prototype (class)")
    ax.set_title(f"the {m} prototypes, grouped by class" + _patched_note(clf))
    return fig


def plot_decision_regions(
    clf,
    X,
    y,
    *,
    ax=None,
    eps=None,
    grid_resolution=200,
    class_names=None,
    feature_names=None,
    title=None,
    legend=True,
):
    """Predicted class regions of a 2-feature model, with the data and the prototypes.

    Regions come from :class:`sklearn.inspection.DecisionBoundaryDisplay`; the data are dots coloured by
    their true class, trained prototypes are diamonds with a black edge in their class's colour, and
    prototypes placed by ``add_prototype`` (``clf.patched_prototypes_``) are stars with a magenta edge.
    Prototypes outside the plotted area are counted in its lower left corner. The scatter plots of the
    prototypes have ``gid`` ``"prototypes"`` and ``"patched prototypes"``; their legend entries are white
    stand-ins, since the prototypes themselves come in every class's colour.

    Parameters
    ----------
    clf : fitted IDWAttentionClassifier with ``n_features_in_ == 2``, or a fitted Pipeline ending in one
    X : array-like of shape (n_samples, 2)
    y : array-like of shape (n_samples,)
        True labels, from ``clf.classes_``.
    ax : matplotlib Axes or None, default=None
        Where to draw; a new figure when None.
    eps : float or None, default=None
        Margin around the data; None is a tenth of the larger feature range.
    grid_resolution : int, default=200
        Grid points per axis at which the regions are predicted.
    class_names : list of str, dict or None, default=None
        Names of the classes in the legend, in the order of ``clf.classes_`` (a list) or by label (a
        dict); default the labels themselves.
    feature_names : (str, str) or None, default=None
        Axis labels; default ``clf.feature_names_in_`` if the model was fitted on a DataFrame, else
        ``x0`` and ``x1``.
    title : str or None, default=None
        Default "predicted classes of m prototypes".
    legend : bool, default=True
        Draw the legend: one entry per class, then ``"prototypes"`` and ``"patched prototypes"`` (the
        latter only when there are some). Pass False to draw one legend for several panels, from
        ``ax.get_legend_handles_labels()``, which holds the same entries.

    Returns
    -------
    matplotlib.axes.Axes
    """
    model = clf
    _, _, clf = _unpipe(model)  # regions from the whole model, prototypes in its input units
    if clf.n_features_in_ != 2:
        raise ValueError(
            f"plot_decision_regions draws models of 2 features; this one has {clf.n_features_in_}. "
            "Use plot_prototypes or plot_explanation for higher dimensions."
        )
    points = check_array(X)
    if points.shape[1] != 2:
        raise ValueError(f"X must have 2 columns like the model; got shape {points.shape}.")
    codes = _class_codes(clf, column_or_1d(y), len(points))
    names = _class_names(clf, class_names)
    features = _feature_names(clf, feature_names)
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from sklearn.inspection import DecisionBoundaryDisplay

    if ax is None:
        _, ax = plt.subplots(layout="constrained")
    colors = _class_colors(len(clf.classes_))
    if eps is None:
        eps = 0.1 * np.ptp(points, axis=0).max()
    if len(clf.classes_) == 2:
        # Binary responses are drawn through cmap; the levels put one class on each side of 0.5.
        region_colors = {"cmap": ListedColormap(colors), "levels": [-0.5, 0.5, 1.5]}
    else:
        region_colors = {"multiclass_colors": list(colors)}
    display = DecisionBoundaryDisplay.from_estimator(
        model, X, response_method="predict", grid_resolution=grid_resolution, eps=eps, ax=ax, alpha=0.3, **region_colors
    )
    for code, name in enumerate(names):
        mine = codes == code
        ax.scatter(*points[mine].T, s=16, color=colors[code], edgecolors="white", linewidths=0.4, label=name)
    ax.set_xlim(display.xx0.min(), display.xx0.max())
    ax.set_ylim(display.xx1.min(), display.xx1.max())
    _draw_prototypes(ax, clf, colors)
    ax.set_xlabel(features[0])
    ax.set_ylabel(features[1])
    ax.set_title(f"predicted classes of {len(clf.prototypes_)} prototypes" if title is None else title)
    if legend:
        ax.legend(fontsize=8, framealpha=0.9)
    return ax


def _draw_prototypes(ax, clf, colors):
    prototype_colors = colors[_prototype_codes(clf)]
    trained, patched = ~clf.patched_prototypes_, clf.patched_prototypes_
    kinds = [
        (trained, "prototypes", {"marker": "D", "s": 60, "edgecolors": "black", "linewidths": 1.2}),
        (patched, "patched prototypes", {"marker": "*", "s": 260, "edgecolors": PATCHED_COLOR, "linewidths": 1.5}),
    ]
    for which, name, style in kinds:
        if which.any():
            # Drawn in their classes' colours, so the legend shows an empty stand-in (named by ``gid``)
            # instead of whichever class colour comes first.
            ax.scatter(*clf.prototypes_[which].T, color=prototype_colors[which], gid=name, label=f"_{name}", **style)
            ax.scatter([], [], color="white", label=name, **style)
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    px, py = clf.prototypes_.T
    outside = np.count_nonzero((px < x_low) | (px > x_high) | (py < y_low) | (py > y_high))
    if outside:
        ax.text(
            0.01,
            0.01,
            f"{outside} prototype{'s' if outside > 1 else ''} outside the view",
            transform=ax.transAxes,
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
        )


def plot_attention(clf, x, *, top_k=10, name=None, class_names=None, ax=None):
    """Where one sample's attention goes: the ``top_k`` prototypes with the largest weights.

    One horizontal bar per prototype, largest first, coloured by the prototype's class and labelled
    ``#index (class name)`` with its weight; patched prototypes have a magenta edge and label. The x axis
    label states the share of the attention these prototypes hold (the weights over all prototypes sum
    to 1).

    Parameters
    ----------
    clf : fitted IDWAttentionClassifier, or a fitted Pipeline whose last step is one
    x : array-like of shape (n_features,) or (1, n_features)
    top_k : int, default=10
        Prototypes to show (at most all of them).
    name : str or None, default=None
        How the title names the sample, e.g. ``"test image 1"``. Default: ``"sample <index>"`` for a
        pandas Series or one-row DataFrame (its index), else ``"the sample"``.
    class_names : list of str, dict or None, default=None
        Names of the classes, in the order of ``clf.classes_`` (a list) or by label (a dict); default the
        labels themselves.
    ax : matplotlib Axes or None, default=None

    Returns
    -------
    matplotlib.axes.Axes
        Titled "attention of <name>: predicted <class>".
    """
    clf, to_classifier, _ = _unpipe(clf)
    top_k = _check_top_k(top_k)
    names = _class_names(clf, class_names)
    row = to_classifier(_one_row(x))
    weights = clf.attention_weights(row)[0]
    predicted = clf.predict(row)[0]
    order = np.argsort(-weights, kind="stable")[:top_k]
    k, m = len(order), len(weights)
    codes = _prototype_codes(clf)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 1.3 + 0.32 * k), layout="constrained")
    colors = _class_colors(len(clf.classes_))
    patched = clf.patched_prototypes_[order]
    bars = ax.barh(
        np.arange(k),
        weights[order],
        color=colors[codes[order]],
        edgecolor=[PATCHED_COLOR if p else "none" for p in patched],
        linewidth=1.5,
    )
    ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.margins(x=0.12)  # room for the value labels
    ax.set_xlim(left=0)
    labels = [f"#{i} (class {names[codes[i]]}{', patched' if p else ''})" for i, p in zip(order, patched, strict=True)]
    ax.set_yticks(np.arange(k), labels=labels)
    for tick, p in zip(ax.get_yticklabels(), patched, strict=True):
        if p:
            tick.set_color(PATCHED_COLOR)
    ax.invert_yaxis()
    share = weights[order].sum() / weights.sum() if weights.sum() > 0 else 0.0
    ax.set_xlabel(f"attention weight (these {k} of {m} prototypes hold {share:.1%} of it)")
    ax.set_ylabel("prototype (class)")
    ax.set_title(f"attention of {_sample_name(x, name)}: predicted {_name_of(clf, names, predicted)}")
    return ax


def plot_explanation(clf, x, *, top_k=5, image_shape=None, class_names=None):
    """Why one sample got its prediction: the ``top_k`` contributions to the predicted logit.

    The contribution of prototype i is its attention weight times its logit for the predicted class
    (:meth:`IDWAttentionClassifier.explain`); one more bar sums the other prototypes, so the bars add up
    to the predicted logit exactly. With ``image_shape``, a row of images above shows the sample and the
    ``top_k`` prototypes, on the sample's grey scale (from its smallest to its largest value: full
    contrast for the sample, and prototype values beyond it drawn white or black).

    Parameters
    ----------
    clf : fitted IDWAttentionClassifier, or a fitted Pipeline whose last step is one
    x : array-like of shape (n_features,) or (1, n_features)
    top_k : int, default=5
    image_shape : (height, width) or None, default=None
    class_names : list of str, dict or None, default=None
        Names of the classes, in the order of ``clf.classes_`` (a list) or by label (a dict); default the
        labels themselves.

    Returns
    -------
    matplotlib.figure.Figure
        The bar chart is ``fig.axes[-1]``.
    """
    clf, to_classifier, shown = _unpipe(clf)
    names = _class_names(clf, class_names)
    row = to_classifier(_one_row(x))
    shape = None if image_shape is None else _check_image_shape(image_shape, clf.n_features_in_)
    e = clf.explain(row, top_k=top_k)
    indices, weights, contributions = e.prototype_indices[0], e.weights[0], e.contributions[0]
    k, m = len(indices), len(clf.prototypes_)
    codes = _prototype_codes(clf)
    predicted = _name_of(clf, names, e.predicted[0])
    plt = _pyplot()
    if shape is None:
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * (k + 1)), layout="constrained")
    else:
        mosaic = [["input", *[f"p{j}" for j in range(k)]], ["bars"] * (k + 1)]
        fig, axes = plt.subplot_mosaic(
            mosaic,
            figsize=(max(1.3 * (k + 1), 7), 3.4 + 0.45 * (k + 1)),
            height_ratios=[1.2, 1 + 0.3 * k],
            layout="constrained",
        )
        # Images in the input's units where a pipeline maps the prototypes back, else as the classifier sees them.
        image_model, image_row = (clf, row) if shown is clf else (shown, _one_row(x))
        _draw_explanation_images(axes, image_model, np.asarray(image_row, dtype=float)[0], e, shape, names, predicted)
        ax = axes["bars"]
    labels = [f"#{i} (class {names[codes[i]]}), weight {w:.3f}" for i, w in zip(indices, weights, strict=True)]
    values = list(contributions)
    colors = _class_colors(len(clf.classes_))
    bar_colors = list(colors[codes[indices]])
    edges = [PATCHED_COLOR if clf.patched_prototypes_[i] else "none" for i in indices]
    if m > k:
        labels.append(f"the other {m - k} prototypes")
        values.append(e.logit[0] - contributions.sum())
        bar_colors.append("lightgrey")
        edges.append("none")
    bars = ax.barh(np.arange(len(values)), values, color=bar_colors, edgecolor=edges, linewidth=1.5)
    ax.bar_label(bars, fmt="%+.3f", fontsize=8, padding=2)
    ax.margins(x=0.15)  # room for the value labels at both ends
    ax.set_yticks(np.arange(len(values)), labels=labels)
    for tick, i in zip(ax.get_yticklabels(), indices, strict=False):
        if clf.patched_prototypes_[i]:
            tick.set_color(PATCHED_COLOR)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"contribution to the logit of class {predicted}")
    ax.set_title(f"predicted {predicted}: logit {e.logit[0]:.3f} = sum of the bars")
    return fig


def plot_feature_terms(clf, x, *, rank=0, class_names=None, ax=None):
    """Why one sample is close to one of its prototypes, feature by feature.

    One horizontal bar per feature, largest first: the feature's term of the squared distance between
    the sample and its ``rank``-th prototype in the model's metric (standardised features times
    ``feature_scales_``; :attr:`Explanation.feature_terms`), labelled with the sample's and the
    prototype's values in the user's units and categories. The terms sum to the distance, which the
    title states; a missing feature adds nothing.

    Parameters
    ----------
    clf : fitted IDWAttentionClassifier, or a fitted Pipeline whose last step is one
    x : array-like or pandas Series of shape (n_features,), or a one-row DataFrame
    rank : int, default=0
        Which prototype: 0 is the one contributing most to the prediction.
    class_names : list of str, dict or None, default=None
        Names of the classes, in the order of ``clf.classes_`` (a list) or by label (a dict).
    ax : matplotlib Axes or None, default=None

    Returns
    -------
    matplotlib.axes.Axes
    """
    model = clf
    clf, _, _ = _unpipe(model)
    names = _class_names(clf, class_names)
    rank = operator.index(rank)
    e = explain(model, _one_row(x), top_k=rank + 1)
    if not 0 <= rank < e.prototype_indices.shape[1]:
        raise ValueError(f"rank must be in [0, {e.prototype_indices.shape[1]}), got {rank}.")
    frame = e.feature_frame(0, rank)
    prototype = e.prototype_indices[0, rank]
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 1.6 + 0.32 * len(frame)), layout="constrained")
    color = _class_colors(len(clf.classes_))[_prototype_codes(clf)[prototype]]
    bars = ax.barh(np.arange(len(frame)), frame["term"], color=color)
    ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.margins(x=0.12)
    ax.set_xlim(left=0)
    labels = [
        f"{f}: {_short(v)} vs {_short(p)}" for f, v, p in frame[["feature", "sample", "prototype"]].itertuples(False)
    ]
    ax.set_yticks(np.arange(len(frame)), labels=labels)
    ax.invert_yaxis()
    ax.set_xlabel("term of the squared distance\n(standardised units × learned feature scale²)")
    ax.set_ylabel("feature: sample vs prototype")
    label = _name_of(clf, names, clf.prototype_labels_[prototype])
    ax.set_title(
        f"why {_sample_name(x, None)} is close to prototype #{prototype} (class {label})\n"
        f"squared distance {frame['term'].sum():.3f} = sum of the bars"
    )
    return ax


def _short(value):
    """A cell's value for a label: numbers to 4 significant digits, a missing one as 'missing'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing"
    return f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)


def _draw_explanation_images(axes, clf, x, e, shape, names, predicted):
    # The sample's own range: a real sample spans the data's range (0 to 16 for digits), so this gives
    # it full contrast, and prototypes are drawn on the same scale to be compared with it.
    vmin, vmax = float(x.min()), float(x.max())
    if vmin == vmax:
        vmin, vmax = _value_range(np.vstack([x, clf.prototypes_[e.prototype_indices[0]]]), None, None)
    axes["input"].imshow(x.reshape(shape), cmap="gray_r", vmin=vmin, vmax=vmax)
    axes["input"].set_title(f"input\npredicted {predicted}", fontsize=9)
    codes = _prototype_codes(clf)
    for j, (i, w) in enumerate(zip(e.prototype_indices[0], e.weights[0], strict=True)):
        ax = axes[f"p{j}"]
        ax.imshow(clf.prototypes_[i].reshape(shape), cmap="gray_r", vmin=vmin, vmax=vmax)
        ax.set_title(f"#{i} class {names[codes[i]]}\nweight {w:.2f}", fontsize=9)
        if clf.patched_prototypes_[i]:
            _mark_patched(ax)
    for name, ax in axes.items():
        if name != "bars":
            ax.set_xticks([])
            ax.set_yticks([])


# ------------------------------------------------------------------ helpers


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("protoattn.plotting needs matplotlib: pip install 'protoattn[plot]'.") from err
    return plt


def _check_fitted(clf):
    if not isinstance(clf, IDWAttentionClassifier):
        raise TypeError(f"clf must be a fitted IDWAttentionClassifier; got {type(clf).__name__}.")
    check_is_fitted(clf)


def _unpipe(model):
    """A display's three views of ``model`` (a fitted classifier, or a fitted Pipeline whose last step
    is one): the classifier, a function taking the model's input to the classifier's, and the
    classifier with its prototypes in the model's input units where the earlier steps can map them
    back (:func:`protoattn.classifier._in_input_units`)."""
    clf, before = _pipeline_parts(model)
    return clf, (lambda X: X) if before is None else before.transform, _in_input_units(clf, before)


def _check_top_k(top_k):
    if not isinstance(top_k, Integral) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    return int(top_k)


def _class_colors(n_classes):
    """One RGBA row per class: tab10 up to 10 classes, then evenly spaced along turbo."""
    from matplotlib import colormaps

    if n_classes <= 10:
        return colormaps["tab10"](np.arange(n_classes))
    return colormaps["turbo"](np.linspace(0, 1, n_classes))


def _class_names(clf, class_names):
    """Display name of each class, in the order of ``clf.classes_``."""
    if class_names is None:
        return [str(label) for label in clf.classes_]
    if isinstance(class_names, Mapping):
        return [str(class_names.get(label, label)) for label in clf.classes_]
    if isinstance(class_names, str):
        raise ValueError(f"class_names must be a list of names or a dict, got the string {class_names!r}.")
    names = [str(name) for name in class_names]
    if len(names) != len(clf.classes_):
        raise ValueError(
            f"class_names has {len(names)} names, but the model has {len(clf.classes_)} classes "
            f"{clf.classes_.tolist()}."
        )
    return names


def _name_of(clf, names, label):
    """The display name of one class label."""
    return names[int(np.flatnonzero(clf.classes_ == label)[0])]


def _sample_name(x, name):
    if name is not None:
        return str(name)
    if getattr(x, "ndim", None) == 1 and hasattr(x, "to_frame") and x.name is not None:  # a pandas Series
        return f"sample {x.name}"
    if getattr(x, "ndim", None) == 2 and hasattr(x, "index"):  # a one-row DataFrame
        return f"sample {x.index[0]}"
    return "the sample"


def _patched_note(clf):
    n = int(np.count_nonzero(clf.patched_prototypes_))
    return f" ({n} patched, in magenta)" if n else ""


def _value_range(values, vmin, vmax):
    low, high = np.percentile(values, _ROBUST_RANGE)
    low = float(low) if vmin is None else float(vmin)
    high = float(high) if vmax is None else float(vmax)
    if not low < high:
        if vmin is not None and vmax is not None:
            raise ValueError(f"vmin must be smaller than vmax; got vmin={vmin!r}, vmax={vmax!r}.")
        low, high = low - 0.5, high + 0.5  # all values equal: any scale around them
    return low, high


def _extend(values, vmin, vmax):
    """The colour bar's arrows: which ends of the scale some values go beyond."""
    below, above = bool(np.min(values) < vmin), bool(np.max(values) > vmax)
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")


def _prototype_codes(clf):
    """Each prototype's class as an index into ``clf.classes_`` (``prototype_labels_`` as codes)."""
    return np.argmax(clf.logits_, axis=1)


def _groups_by_class(clf):
    """Indices of the prototypes of each class, in the order of ``clf.classes_``."""
    codes = _prototype_codes(clf)
    return [np.flatnonzero(codes == c) for c in range(len(clf.classes_))]


def _class_codes(clf, y, n_samples):
    if len(y) != n_samples:
        raise ValueError(f"y must have one label per row of X: {len(y)} labels for {n_samples} rows.")
    index = {label: code for code, label in enumerate(clf.classes_)}
    codes = np.array([index.get(label, -1) for label in y], dtype=int)
    if np.any(codes < 0):
        raise ValueError(
            f"y holds labels the model does not know: {sorted(set(y[codes < 0].tolist()))[:5]}; "
            f"expected labels from {clf.classes_.tolist()}."
        )
    return codes


def _check_image_shape(image_shape, n_features):
    try:
        shape = tuple(operator.index(size) for size in image_shape)
    except TypeError:
        shape = ()
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"image_shape must be (height, width), two positive integers; got {image_shape!r}.")
    if shape[0] * shape[1] != n_features:
        raise ValueError(
            f"image_shape {shape} holds {shape[0] * shape[1]} pixels, but the model has {n_features} features."
        )
    return shape


def _feature_names(clf, feature_names):
    if feature_names is None:
        if hasattr(clf, "feature_names_in_"):
            return [str(name) for name in clf.feature_names_in_]
        return [f"x{j}" for j in range(clf.n_features_in_)]
    if isinstance(feature_names, str):
        raise ValueError(f"feature_names must be a list of names, got the string {feature_names!r}.")
    names = [str(name) for name in feature_names]
    if len(names) != clf.n_features_in_:
        raise ValueError(f"feature_names has {len(names)} names, but the model has {clf.n_features_in_} features.")
    return names


def _one_row(x):
    """``x`` as a one-row 2-D input for the classifier's methods, which then check its width."""
    if getattr(x, "ndim", None) == 1 and hasattr(x, "to_frame"):  # a pandas Series keeps its feature names
        return x.to_frame().T
    if np.ndim(x) == 1:
        return np.reshape(np.asarray(x), (1, -1))
    if np.ndim(x) != 2 or np.shape(x)[0] != 1:
        raise ValueError(f"x must be one sample (a 1-D array or a single row); got shape {np.shape(x)}.")
    return x
