"""Matplotlib displays of a fitted :class:`~protoattn.IDWAttentionClassifier` (the ``plot`` extra).

matplotlib is imported inside the functions, so ``import protoattn`` never needs it. Each function returns
what it drew on (a Figure, or the Axes it was given or made) and never calls ``plt.show()``. Colours are
per class and shared by all displays; prototypes placed by ``add_prototype`` are outlined in magenta.
"""

from __future__ import annotations

import operator

import numpy as np
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from .classifier import IDWAttentionClassifier

__all__ = ["plot_attention", "plot_decision_regions", "plot_explanation", "plot_prototypes"]

#: Edge colour of the prototypes placed by ``add_prototype`` (no class colour is close to it).
PATCHED_COLOR = "magenta"

# Above this many rows or columns, a heatmap's ticks are left to matplotlib instead of naming each one.
_MAX_NAMED_TICKS = 60


def plot_prototypes(clf, image_shape=None, feature_names=None):
    """The prototypes grouped by class: images when ``image_shape`` is given, else a heatmap.

    Parameters
    ----------
    clf : fitted IDWAttentionClassifier
    image_shape : (height, width) or None, default=None
        Draw each prototype as a grey image of this shape (``height * width == n_features_in_``): one row
        of images per class, titled with the prototype's index.
    feature_names : list of str or None, default=None
        Column names of the heatmap; default ``clf.feature_names_in_`` if the model was fitted on a
        DataFrame, else ``x0, x1, ...``. Rows are the prototypes sorted by class, labelled ``#index class``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_fitted(clf)
    plt = _pyplot()
    if image_shape is not None:
        if feature_names is not None:
            raise ValueError("Pass image_shape (images) or feature_names (heatmap), not both.")
        return _prototype_images(clf, _check_image_shape(image_shape, clf.n_features_in_), plt)
    return _prototype_heatmap(clf, _feature_names(clf, feature_names), plt)


def _prototype_images(clf, shape, plt):
    groups = _groups_by_class(clf)
    n_cols = max(max(len(group) for group in groups), 1)
    fig, axes = plt.subplots(
        len(groups), n_cols, figsize=(0.9 * n_cols + 0.8, 1.0 * len(groups) + 0.3), squeeze=False, layout="constrained"
    )
    # One grey scale for all, from the 1st to the 99th percentile: robust to a few extreme prototypes.
    vmin, vmax = np.percentile(clf.prototypes_, [1, 99])
    for label, group, row in zip(clf.classes_, groups, axes, strict=True):
        row[0].set_ylabel(str(label), rotation=0, ha="right", va="center", fontsize=11)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
        for ax, i in zip(row, group, strict=False):
            ax.imshow(clf.prototypes_[i].reshape(shape), cmap="gray_r", vmin=vmin, vmax=vmax)
            ax.set_frame_on(True)
            ax.set_title(f"#{i}", fontsize=8)
            if clf.patched_prototypes_[i]:
                _mark_patched(ax)
    return fig


def _mark_patched(ax):
    for spine in ax.spines.values():
        spine.set_edgecolor(PATCHED_COLOR)
        spine.set_linewidth(2.5)
    ax.title.set_color(PATCHED_COLOR)


def _prototype_heatmap(clf, names, plt):
    groups = _groups_by_class(clf)
    order = np.concatenate(groups)
    values = clf.prototypes_[order]
    m, d = values.shape
    # Room for the rotated feature names below the rows (about 0.09 inch per character).
    label_room = 0.09 * max(len(name) for name in names) if d <= _MAX_NAMED_TICKS else 0.5
    fig, ax = plt.subplots(figsize=(min(3 + 0.3 * d, 16), min(1.2 + 0.3 * m + label_room, 24)), layout="constrained")
    # Colours span the 1st to 99th percentile, so that a few extreme values do not wash out the rest.
    low, high = np.percentile(values, [1, 99])
    if low < 0 < high:
        top = max(-low, high)
        image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
    else:
        image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="prototype value", extend="both")
    if d <= _MAX_NAMED_TICKS:
        ax.set_xticks(np.arange(d), labels=names, rotation=90)
    if m <= _MAX_NAMED_TICKS:
        ax.set_yticks(np.arange(m), labels=[f"#{i}  {clf.prototype_labels_[i]}" for i in order])
        for tick, i in zip(ax.get_yticklabels(), order, strict=True):
            if clf.patched_prototypes_[i]:
                tick.set_color(PATCHED_COLOR)
    for boundary in np.cumsum([len(group) for group in groups])[:-1]:
        ax.axhline(boundary - 0.5, color="black", linewidth=1.5)
    ax.set_xlabel("feature")
    ax.set_ylabel("prototype (class)")
    return fig


def plot_decision_regions(clf, X, y, *, ax=None, eps=None, grid_resolution=200):
    """Predicted class regions of a 2-feature model, with the data and the prototypes.

    Regions come from :class:`sklearn.inspection.DecisionBoundaryDisplay`; the data are dots coloured by
    their true class, trained prototypes are diamonds with a black edge in their class's colour, and
    prototypes placed by ``add_prototype`` (``clf.patched_prototypes_``) are stars with a magenta edge.
    Prototypes outside the plotted area are counted in its lower left corner.

    Parameters
    ----------
    clf : fitted IDWAttentionClassifier with ``n_features_in_ == 2``
    X : array-like of shape (n_samples, 2)
    y : array-like of shape (n_samples,)
        True labels, from ``clf.classes_``.
    ax : matplotlib Axes or None, default=None
        Where to draw; a new figure when None.
    eps : float or None, default=None
        Margin around the data; None is a tenth of the larger feature range.
    grid_resolution : int, default=200
        Grid points per axis at which the regions are predicted.

    Returns
    -------
    matplotlib.axes.Axes
        Legend entries are labelled (one per class, ``"prototypes"``, ``"patched prototypes"``); call
        ``ax.legend()`` to show them.
    """
    _check_fitted(clf)
    if clf.n_features_in_ != 2:
        raise ValueError(
            f"plot_decision_regions draws models of 2 features; this one has {clf.n_features_in_}. "
            "Use plot_prototypes or plot_explanation for higher dimensions."
        )
    points = check_array(X)
    if points.shape[1] != 2:
        raise ValueError(f"X must have 2 columns like the model; got shape {points.shape}.")
    codes = _class_codes(clf, column_or_1d(y), len(points))
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from sklearn.inspection import DecisionBoundaryDisplay

    if ax is None:
        _, ax = plt.subplots()
    colors = _class_colors(len(clf.classes_))
    if eps is None:
        eps = 0.1 * np.ptp(points, axis=0).max()
    if len(clf.classes_) == 2:
        # Binary responses are drawn through cmap; the levels put one class on each side of 0.5.
        region_colors = {"cmap": ListedColormap(colors), "levels": [-0.5, 0.5, 1.5]}
    else:
        region_colors = {"multiclass_colors": list(colors)}
    display = DecisionBoundaryDisplay.from_estimator(
        clf, X, response_method="predict", grid_resolution=grid_resolution, eps=eps, ax=ax, alpha=0.3, **region_colors
    )
    for code, label in enumerate(clf.classes_):
        mine = codes == code
        ax.scatter(*points[mine].T, s=16, color=colors[code], edgecolors="white", linewidths=0.4, label=str(label))
    ax.set_xlim(display.xx0.min(), display.xx0.max())
    ax.set_ylim(display.xx1.min(), display.xx1.max())
    _draw_prototypes(ax, clf, colors)
    return ax


def _draw_prototypes(ax, clf, colors):
    prototype_colors = colors[_prototype_codes(clf)]
    trained, patched = ~clf.patched_prototypes_, clf.patched_prototypes_
    if trained.any():
        ax.scatter(
            *clf.prototypes_[trained].T,
            marker="D",
            s=60,
            color=prototype_colors[trained],
            edgecolors="black",
            linewidths=1.2,
            label="prototypes",
        )
    if patched.any():
        ax.scatter(
            *clf.prototypes_[patched].T,
            marker="*",
            s=260,
            color=prototype_colors[patched],
            edgecolors=PATCHED_COLOR,
            linewidths=1.5,
            label="patched prototypes",
        )
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


def plot_attention(clf, x, *, ax=None):
    """Attention weights of one sample over every prototype, as bars coloured by the prototype's class.

    Parameters
    ----------
    clf : fitted IDWAttentionClassifier
    x : array-like of shape (n_features,) or (1, n_features)
    ax : matplotlib Axes or None, default=None

    Returns
    -------
    matplotlib.axes.Axes
        One bar per prototype, in the order of ``clf.prototypes_``; patched prototypes have a magenta edge.
    """
    _check_fitted(clf)
    row = _one_row(x)
    weights = clf.attention_weights(row)[0]
    predicted = clf.predict(row)[0]
    plt = _pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3), layout="constrained")
    colors = _class_colors(len(clf.classes_))
    ax.bar(
        np.arange(len(weights)),
        weights,
        color=colors[_prototype_codes(clf)],
        edgecolor=[PATCHED_COLOR if p else "none" for p in clf.patched_prototypes_],
        linewidth=1.5,
    )
    handles = [Patch(color=colors[c], label=str(label)) for c, label in enumerate(clf.classes_)]
    ax.legend(handles=handles, title="prototype class", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("prototype")
    ax.set_ylabel("attention weight")
    ax.set_title(f"predicted {predicted}")
    return ax


def plot_explanation(clf, x, *, top_k=5, image_shape=None):
    """Why one sample got its prediction: the ``top_k`` contributions to the predicted logit.

    The contribution of prototype i is its attention weight times its logit for the predicted class
    (:meth:`IDWAttentionClassifier.explain`); one more bar sums the other prototypes, so the bars add up
    to the predicted logit exactly. With ``image_shape``, a row of images above shows the sample and the
    ``top_k`` prototypes.

    Parameters
    ----------
    clf : fitted IDWAttentionClassifier
    x : array-like of shape (n_features,) or (1, n_features)
    top_k : int, default=5
    image_shape : (height, width) or None, default=None

    Returns
    -------
    matplotlib.figure.Figure
        The bar chart is ``fig.axes[-1]``.
    """
    _check_fitted(clf)
    row = _one_row(x)
    shape = None if image_shape is None else _check_image_shape(image_shape, clf.n_features_in_)
    e = clf.explain(row, top_k=top_k)
    indices, weights, contributions = e.prototype_indices[0], e.weights[0], e.contributions[0]
    k, m = len(indices), len(clf.prototypes_)
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
        _draw_explanation_images(axes, clf, np.asarray(row, dtype=float)[0], e, shape)
        ax = axes["bars"]
    labels = [
        f"#{i} (class {c}), weight {w:.3f}" for i, c, w in zip(indices, e.prototype_labels[0], weights, strict=True)
    ]
    values = list(contributions)
    colors = _class_colors(len(clf.classes_))
    bar_colors = list(colors[_prototype_codes(clf)[indices]])
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
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"contribution to the logit of class {e.predicted[0]}")
    ax.set_title(f"predicted {e.predicted[0]}: logit {e.logit[0]:.3f} = sum of the bars")
    return fig


def _draw_explanation_images(axes, clf, x, e, shape):
    shown = np.vstack([x, clf.prototypes_[e.prototype_indices[0]]])
    vmin, vmax = shown.min(), shown.max()
    axes["input"].imshow(x.reshape(shape), cmap="gray_r", vmin=vmin, vmax=vmax)
    axes["input"].set_title(f"input\npredicted {e.predicted[0]}", fontsize=9)
    for j, (i, label, w) in enumerate(zip(e.prototype_indices[0], e.prototype_labels[0], e.weights[0], strict=True)):
        ax = axes[f"p{j}"]
        ax.imshow(clf.prototypes_[i].reshape(shape), cmap="gray_r", vmin=vmin, vmax=vmax)
        ax.set_title(f"#{i} class {label}\nweight {w:.2f}", fontsize=9)
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
        raise TypeError(
            f"clf must be a fitted IDWAttentionClassifier (for a pipeline, pass its last step); "
            f"got {type(clf).__name__}."
        )
    check_is_fitted(clf)


def _class_colors(n_classes):
    """One RGBA row per class: tab10 up to 10 classes, then evenly spaced along turbo."""
    from matplotlib import colormaps

    if n_classes <= 10:
        return colormaps["tab10"](np.arange(n_classes))
    return colormaps["turbo"](np.linspace(0, 1, n_classes))


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
