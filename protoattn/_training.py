"""Fitting the attention network: prototype initialisation and the optimisation loop."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import pairwise_distances_argmin
from sklearn.model_selection import train_test_split

from ._network import PrototypeAttention

#: Initial value rows are one-hot class indicators times this logit scale.
VALUE_SCALE = 3.0

#: k-means initialisation sees at most this many rows of a class per centre.
KMEANS_ROWS_PER_CENTRE = 50


def aggregate_duplicates(X, y, sample_weight):
    """Merge identical ``(x, y)`` rows, summing their weights, and drop rows of weight 0.

    This makes ``sample_weight=k`` exactly the same as repeating a row k times (the rows end up in
    one canonical, sorted order either way).
    """
    # One byte string per row (-0.0 + 0.0 is 0.0): np.unique sorts these far faster than it sorts rows
    # column by column.
    rows = np.ascontiguousarray(np.column_stack([X + 0.0, y]))
    keys = rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    weight = np.bincount(inverse.ravel(), weights=sample_weight, minlength=len(first))
    first = first[weight > 0]
    return X[first], y[first], weight[weight > 0]


def prototypes_per_class(class_sizes, n_prototypes):
    """Spread ``n_prototypes`` over classes as evenly as their sizes allow (largest classes first)."""
    counts = np.zeros(len(class_sizes), dtype=np.intp)
    order = np.argsort(-np.asarray(class_sizes), kind="stable")
    for _ in range(int(n_prototypes)):
        open_ = [c for c in order if counts[c] < class_sizes[c]]
        if not open_:
            break
        c = min(open_, key=lambda c: counts[c])
        counts[c] += 1
    return counts


def kmeans_prototypes(X, y, weight, counts, n_classes, random_state):
    """Class-balanced k-means initialisation.

    Keys: ``counts[c]`` weighted k-means centres of class c's rows (of a random subset of
    ``KMEANS_ROWS_PER_CENTRE`` rows per centre in large classes: training moves the keys anyway, and
    k-means on all rows would cost more than the training itself). Values: ``VALUE_SCALE`` times the
    weighted class frequencies of the training rows nearest to each key (its Voronoi cell), so the
    network starts as a soft nearest-prototype classifier that already respects sample and class
    weights; a key with an empty cell starts as its own class.
    """
    keys, labels = [], []
    for c, k in enumerate(counts):
        if k == 0:
            continue
        Xc, wc = X[y == c], weight[y == c]
        if k == len(Xc):
            centres = Xc
        else:
            if len(Xc) > KMEANS_ROWS_PER_CENTRE * k:
                rows = random_state.choice(len(Xc), KMEANS_ROWS_PER_CENTRE * k, replace=False)
                Xc, wc = Xc[rows], wc[rows]
            km = KMeans(n_clusters=int(k), n_init=1, random_state=random_state)
            centres = km.fit(Xc, sample_weight=wc).cluster_centers_
        keys.append(centres)
        labels.append(np.full(len(centres), c))
    keys, labels = np.concatenate(keys), np.concatenate(labels)
    cell = pairwise_distances_argmin(X, keys)
    frequencies = np.zeros((len(keys), n_classes))
    np.add.at(frequencies, (cell, y), weight)
    empty = frequencies.sum(1) == 0
    frequencies[empty, labels[empty]] = 1.0
    return keys, VALUE_SCALE * frequencies / frequencies.sum(1, keepdims=True)


def validation_split(X, y, weight, fraction, random_state):
    """Hold out ``fraction`` of the rows, stratified when every class can be represented.

    Returns the training rows and the held-out ``(X, y, weight)`` as float32/long tensors.
    """
    n_val = math.ceil(fraction * len(X))
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and n_val >= (counts > 0).sum() else None
    X, Xv, y, yv, weight, wv = train_test_split(
        X, y, weight, test_size=n_val, stratify=stratify, random_state=random_state
    )
    as_float = torch.float32
    validation = (torch.as_tensor(Xv, dtype=as_float), torch.as_tensor(yv), torch.as_tensor(wv, dtype=as_float))
    return X, y, weight, validation


def random_prototypes(X, weight, n_prototypes, n_classes, random_state):
    """The IDW attention paper's initialisation: keys drawn from a narrow Gaussian around the
    (weighted) data mean, values drawn from a standard normal scaled down."""
    mean = np.average(X, axis=0, weights=weight)
    std = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=weight))
    keys = mean + 0.1 * std * random_state.standard_normal((n_prototypes, X.shape[1]))
    values = 0.1 * random_state.standard_normal((n_prototypes, n_classes))
    return keys, values


@dataclass
class TrainingResult:
    n_iter: int = 0
    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    best_validation_score: float | None = None


def _snapshot(network):
    return {name: tensor.detach().clone() for name, tensor in network.state_dict().items()}


def _weighted_accuracy(network, X, y, w):
    with torch.inference_mode():
        hit = (network(X).argmax(1) == y).to(w.dtype)
    return float((hit * w).sum() / w.sum())


def train(
    network: PrototypeAttention,
    X: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    *,
    validation=None,
    max_epochs: int,
    batch_size: int,
    learning_rate: float,
    n_iter_no_change: int,
    tol: float,
    power_schedule,
    generator: torch.Generator,
    verbose: int = 0,
) -> TrainingResult:
    """Adam with a cosine learning-rate schedule on weighted cross-entropy.

    ``power_schedule(epoch)`` gives the power for each epoch (annealing). Stopping follows
    ``MLPClassifier``: with ``validation=(Xv, yv, wv)`` on the validation accuracy (restoring the
    best parameters), otherwise on the training loss, both after ``n_iter_no_change`` epochs
    without an improvement of ``tol``, counted once the power has stopped changing.
    """
    n = X.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    # Adam's steps have a fixed size, so keys learn at learning_rate times the data's spread: the
    # trajectory is then the same whatever the units of the features.
    spread = float(X.std(0).pow(2).mean().sqrt()) or 1.0
    groups = [
        {"params": [network.keys], "lr": learning_rate * spread},
        {"params": [p for name, p in network.named_parameters() if name != "keys"]},
    ]
    # fused: one kernel per parameter instead of a dozen small ops, most of the step's overhead.
    optimizer = torch.optim.Adam(groups, lr=learning_rate, fused=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs * steps_per_epoch)
    result = TrainingResult()
    best, best_state, stall = -math.inf, _snapshot(network), 0
    for epoch in range(max_epochs):
        network.power = power_schedule(epoch)
        if steps_per_epoch > 1:
            # One gather per epoch; the batches are then views.
            order = torch.randperm(n, generator=generator)
            Xe, ye, we = X[order], y[order], w[order]
        else:
            Xe, ye, we = X, y, w
        epoch_loss = torch.zeros((), dtype=X.dtype)
        for start in range(0, n, batch_size):
            xb, yb, wb = Xe[start : start + batch_size], ye[start : start + batch_size], we[start : start + batch_size]
            batch_weight = wb.sum()
            loss = torch.dot(torch.nn.functional.cross_entropy(network(xb), yb, reduction="none"), wb) / batch_weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_loss += loss.detach() * batch_weight
        epoch_loss = float(epoch_loss / w.sum())
        if not math.isfinite(epoch_loss):
            network.load_state_dict(best_state)
            warnings.warn(
                f"Training diverged at epoch {epoch + 1} (non-finite loss); kept the best finite "
                "parameters so far. Lower learning_rate or power, or scale the features.",
                ConvergenceWarning,
                stacklevel=3,
            )
            break
        result.loss_curve.append(epoch_loss)
        result.n_iter = epoch + 1
        message = f"epoch {epoch + 1}: loss {epoch_loss:.5f}"
        current = -epoch_loss
        if validation is not None:
            current = _weighted_accuracy(network, *validation)
            result.validation_scores.append(current)
            message += f", validation accuracy {current:.4f}"
        if verbose:
            print(message, flush=True)
        # While the power still changes, scores are not comparable across epochs: restart the count.
        if current > best + tol or power_schedule(epoch + 1) != network.power:
            best, best_state, stall = current, _snapshot(network), 0
        else:
            stall += 1
            if stall >= n_iter_no_change:
                if verbose:
                    print(f"stopping: no improvement of {tol} in {n_iter_no_change} epochs", flush=True)
                break
    if validation is not None:
        network.load_state_dict(best_state)
        result.best_validation_score = best
    return result
