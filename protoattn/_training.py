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
from torch import nn

from . import _fast
from ._network import PrototypeAttention

#: Initial value rows are one-hot class indicators times this logit scale.
VALUE_SCALE = 3.0

_BLOCK_ROWS = 4096

#: The diagonal metric's log-scales of numeric features learn at this fraction of the learning rate:
#: the keys' coordinates learn too, and at the full rate the scales overfit digits.
SCALE_RATE = 0.1
#: ... and those of categorical features at this one: the keys' one-hot coordinates stay on their
#: categories, so the scale is all that training adjusts for such a feature.
CATEGORY_SCALE_RATE = 1.0
#: ... and stay within e^±22, where their powers and products stay finite even in float32 (a diverging
#: step would otherwise make them 0 or infinite).
MAX_LOG_SCALE = 22.0

#: k-means initialisation sees at most this many rows of a class per centre.
KMEANS_ROWS_PER_CENTRE = 40
#: Initial values count the classes in each key's Voronoi cell on at most this many rows per key.
VALUE_ROWS_PER_KEY = 100


def aggregate_duplicates(X, y, sample_weight):
    """Merge identical ``(x, y)`` rows, summing their weights, and drop rows of weight 0.

    This makes ``sample_weight=k`` exactly the same as repeating a row k times (the rows end up in
    one canonical order either way).
    """
    # Rows are grouped by a 64-bit hash of their bits, then compared exactly: np.unique over rows sorts
    # them column by column, a hundred times slower on large data. Blocks keep the temporaries small.
    multipliers = np.random.default_rng(0).integers(1, 2**63, size=X.shape[1] + 1, dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(len(X), dtype=np.uint64)
    for start in range(0, len(X), _BLOCK_ROWS):
        block = np.column_stack(
            [X[start : start + _BLOCK_ROWS] + 0.0, y[start : start + _BLOCK_ROWS]]
        )  # -0.0 + 0.0 = 0.0
        bits = np.ascontiguousarray(block, dtype=np.float64).view(np.uint64)
        hashes[start : start + _BLOCK_ROWS] = (bits ^ (bits >> np.uint64(29))) @ multipliers  # modulo 2**64
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    for start in range(0, len(X), _BLOCK_ROWS):
        rows = first[inverse[start : start + _BLOCK_ROWS]]
        same = np.array_equal(X[rows], X[start : start + _BLOCK_ROWS]) and np.array_equal(
            y[rows], y[start : start + _BLOCK_ROWS]
        )
        if not same:  # a hash collision: group by the rows themselves
            _, first, inverse = np.unique(np.column_stack([X + 0.0, y]), axis=0, return_index=True, return_inverse=True)
            inverse = inverse.ravel()
            break
    weight = np.bincount(inverse, weights=sample_weight, minlength=len(first))
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
    weighted class frequencies of the training rows nearest to each key (its Voronoi cell; counted
    on a random subset of ``VALUE_ROWS_PER_KEY`` rows per key in large data sets), so the
    network starts as a soft nearest-prototype classifier that already respects sample and class
    weights; a key with an empty cell starts as its own class.
    """
    keys, labels = [], []
    for c, k in enumerate(counts):
        if k == 0:
            continue
        rows = np.flatnonzero(y == c)
        if len(rows) > KMEANS_ROWS_PER_CENTRE * k:  # the subset's rows are gathered, not the whole class
            rows = rows[random_state.choice(len(rows), KMEANS_ROWS_PER_CENTRE * k, replace=False)]
        Xc, wc = X[rows], weight[rows]
        if k == len(Xc):
            centres = Xc
        else:
            km = KMeans(n_clusters=int(k), n_init=1, random_state=random_state)
            centres = km.fit(Xc, sample_weight=wc).cluster_centers_
        keys.append(centres)
        labels.append(np.full(len(centres), c))
    keys, labels = np.concatenate(keys), np.concatenate(labels)
    if len(X) > VALUE_ROWS_PER_KEY * len(keys):
        rows = random_state.choice(len(X), VALUE_ROWS_PER_KEY * len(keys), replace=False)
        X, y, weight = X[rows], y[rows], weight[rows]
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


def power_schedule(start, end, epochs):
    """Linear annealing of the power from ``start`` to ``end`` over ``epochs``, then constant.

    When both ends are even integers the steps are rounded to even integers, whose powers the CPU's
    fast path (:mod:`protoattn._fast`) takes by squaring.
    """
    even = start % 2 == 0 and end % 2 == 0

    def power(epoch):
        value = start + (end - start) * min(epoch / max(epochs, 1), 1.0)
        return 2.0 * round(value / 2) if even else value

    return power


@dataclass
class TrainingResult:
    n_iter: int = 0
    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    best_validation_score: float | None = None
    spread: float = 0.0
    optimizer_state: dict = field(default_factory=dict)


class AutogradStep:
    """One optimisation step of any network through autograd: weighted cross-entropy, then
    ``torch.optim.Adam`` with one learning rate per parameter (or an array of one per entry) under a
    cosine decay to 0 over ``total_steps`` (``anneal=False``: constant rates). Called with a batch
    ``(X, y, w)`` and the attention dropout's ``keep`` mask (boolean, (m, n), or None), returns its
    weighted loss; :meth:`state` has the layout of :meth:`protoattn._fast.TrainingStep.state`."""

    def __init__(self, network, learning_rates, total_steps, anneal=True):
        self.network = network
        self.names = [name for name, _ in network.named_parameters()]
        # Adam's step is proportional to the rate: a parameter with a rate per entry steps at the largest,
        # and each entry's step is scaled back to its own rate afterwards.
        groups, self.relative = [], {}
        for (_, p), rate in zip(network.named_parameters(), learning_rates, strict=True):
            top = float(np.max(rate))
            if np.ndim(rate):
                self.relative[p] = torch.as_tensor(np.asarray(rate) / top, dtype=p.dtype, device=p.device)
            groups.append({"params": [p], "lr": top})
        self.optimizer = torch.optim.Adam(groups)
        total = max(total_steps, 1)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _fast.cosine_decay(step, total) if anneal else 1.0
        )

    def __call__(self, X, y, w, keep=None):
        self.optimizer.zero_grad()
        logits = self.network(X, None if keep is None else keep.to(X.device).T)
        weighted = torch.dot(nn.functional.cross_entropy(logits, y, reduction="none"), w)
        (weighted / len(X)).backward()
        before = {p: p.detach().clone() for p in self.relative}
        self.optimizer.step()
        with torch.no_grad():
            for p, relative in self.relative.items():
                p.copy_(torch.lerp(before[p], p, relative))
        self.schedule.step()
        return weighted.item()

    def state(self):
        state = {"steps": self.schedule.last_epoch}
        for name, p in zip(self.names, self.network.parameters(), strict=True):
            moments = self.optimizer.state.get(p, {})
            if moments:
                state[name] = torch.stack([moments["exp_avg"], moments["exp_avg_sq"]]).detach().cpu().numpy()
        return state

    def load_state(self, state):
        self.schedule.last_epoch = state["steps"]
        for name, p in zip(self.names, self.network.parameters(), strict=True):
            mean, square = (torch.as_tensor(m, dtype=p.dtype, device=p.device) for m in state[name])
            self.optimizer.state[p] = {
                "step": torch.tensor(float(state["steps"])),
                "exp_avg": mean,
                "exp_avg_sq": square,
            }


def _resumable(step, state):
    """Whether ``state`` from an earlier :meth:`TrainingStep.state` fits the parameters of ``step``
    (it does not after prototypes were added or removed) and is finite."""
    return (
        bool(state)
        and set(state) == {"steps", *step.names}
        and all(
            np.shape(state[name])[1:] == tuple(p.shape) and np.isfinite(state[name]).all()
            for name, p in zip(step.names, step.network.parameters(), strict=True)
        )
    )


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
    spread: float | None = None,
    optimizer_state: dict | None = None,
    anneal_learning_rate: bool = True,
    project=None,
    categorical=None,
    dropout: float = 0.0,
) -> TrainingResult:
    """Adam with a cosine learning-rate schedule on weighted cross-entropy.

    ``power_schedule(epoch)`` gives the power for each epoch (annealing). Stopping follows
    ``MLPClassifier``: with ``validation=(Xv, yv, wv)`` on the validation accuracy (restoring the
    best parameters), otherwise on the training loss, both after ``n_iter_no_change`` epochs
    without an improvement of ``tol``, counted once the power has stopped changing.

    For ``partial_fit``: ``spread`` fixes the scale of the keys' learning rate (default: X's),
    ``optimizer_state`` resumes Adam from an earlier result's (unless the parameters changed shape),
    and ``anneal_learning_rate=False`` keeps the rate constant. ``project()``, when given, runs after
    every step (it keeps the keys in the data). ``categorical`` (a boolean per feature) gives the
    metric's scales of categorical features their own rate (``CATEGORY_SCALE_RATE``). ``dropout`` is
    the share of attention weights dropped in each step (:func:`keep_mask`).
    """
    n = X.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    # Adam's steps have a fixed size, so keys learn at learning_rate times the data's spread (the
    # root mean variance of the features): the same trajectory whatever the units.
    missing = bool(X.isnan().any())
    if spread is None:
        centred = X - X.nanmean(0) if missing else X - X.mean(0)  # nanmean is several times slower
        centred = centred.nan_to_num() if missing else centred
        spread = float(torch.linalg.vector_norm(centred) / math.sqrt(X.shape[1] * (n - 1)))
        spread = spread if n > 1 and math.isfinite(spread) else 0.0
    # Adam's first step is learning_rate / (1 - beta1) = 10 learning rates: refuse one that does not
    # fit the parameters' dtype, rather than train to NaN.
    if 10 * learning_rate * max(spread, 1.0) >= torch.finfo(X.dtype).max:
        raise ValueError(
            f"learning_rate={learning_rate:g} is too large: Adam's first step overflows {X.dtype}. "
            "Use a learning_rate near the default 0.1."
        )
    metric = SCALE_RATE
    if categorical is not None and np.any(categorical):
        metric = np.where(categorical, CATEGORY_SCALE_RATE, SCALE_RATE).astype(np.float32)
    scaled = {"keys": spread or 1.0, "log_scales": metric}
    rates = [learning_rate * scaled.get(name, 1.0) for name, _ in network.named_parameters()]
    total_steps = max_epochs * steps_per_epoch
    # A batch's loss is the mean of ce·w/w̄ over its rows: over the full batch, exactly Σ ce·w / Σ w.
    w = w / w.mean()
    # The speed variant's training step knows no reaches: a model with patches of finite reach trains in torch.
    if network.shepard and network.reach is None and network.keys.device.type == "cpu" and not missing:
        step = _fast.TrainingStep(network, rates, total_steps, anneal_learning_rate)
        X, y, w = (t.numpy() for t in (X, y, w))
    else:
        step = AutogradStep(network, rates, total_steps, anneal_learning_rate)
    if _resumable(step, optimizer_state):
        step.load_state(optimizer_state)
    # numpy's clip on the CPU (the same memory): a third of torch's cost per call on a small vector
    log_scales = network.log_scales
    if log_scales is not None:
        log_scales = log_scales.detach().numpy() if log_scales.is_cpu else log_scales.detach()
    result = TrainingResult(spread=spread)
    initial_state = _snapshot(network)
    best, best_state, stall = -math.inf, initial_state, 0
    for epoch in range(max_epochs):
        network.power = power_schedule(epoch)
        batches = [(X, y, w)]
        if steps_per_epoch > 1:
            order = torch.randperm(n, generator=generator)
            shuffled = [  # np.take: twice as fast as fancy indexing
                np.take(t, order.numpy(), axis=0) if isinstance(t, np.ndarray) else t[order.to(t.device)]
                for t in (X, y, w)
            ]
            batches = (tuple(t[start : start + batch_size] for t in shuffled) for start in range(0, n, batch_size))
        epoch_loss = 0.0
        with np.errstate(all="ignore"):  # like torch: NaN and infinity propagate without a warning
            for xb, yb, wb in batches:
                keep = keep_mask(len(network.keys), len(xb), dropout, generator) if dropout else None
                epoch_loss += step(xb, yb, wb, keep)
                if project is not None:
                    project()
                if isinstance(log_scales, np.ndarray):
                    log_scales.clip(-MAX_LOG_SCALE, MAX_LOG_SCALE, out=log_scales)
                elif log_scales is not None:
                    log_scales.clamp_(-MAX_LOG_SCALE, MAX_LOG_SCALE)
        epoch_loss /= n
        if not math.isfinite(epoch_loss):
            network.load_state_dict(best_state)
            warnings.warn(
                f"Training diverged at epoch {epoch + 1} (non-finite loss); kept the best finite "
                "parameters so far. Lower learning_rate or power.",
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
    _keep_finite(network, X, [best_state, initial_state], learning_rate)
    result.optimizer_state = step.state()
    return result


def keep_mask(n_prototypes, n_rows, dropout, generator):
    """Attention dropout's mask, boolean of shape (n_prototypes, n_rows): each row's weight on each
    prototype is dropped with probability ``dropout`` in a training step, the others share it (a row
    that would lose every prototype keeps them all). A row must then be predicted by other
    prototypes than its nearest now and then, which keeps the prototypes near their classes' data
    and smooths what small tables learn (attention dropout as in Vaswani et al. 2017, here before
    the normalisation, so that the weights stay an average)."""
    keep = torch.rand((n_prototypes, n_rows), generator=generator) >= dropout
    return keep.logical_or_(~keep.any(0))


def _keep_finite(network, X, fallbacks, learning_rate):
    """Make sure the network predicts finite logits on every training row, falling back to the
    given earlier states (with a warning), else refuse.

    The losses that training sees are those of the parameters *before* each step, so the last
    step's parameters, and a snapshot taken after a step, are never checked there: a step can leave
    finite parameters that predict NaN everywhere (a learned kernel's scales of 1e3 overflow exp).
    One more pass over the rows (a fraction of an epoch's work) checks the parameters kept.
    """
    if _finite_everywhere(network, X):
        return
    for state in fallbacks:
        network.load_state_dict(state)
        if _finite_everywhere(network, X):
            warnings.warn(
                "Training diverged: its last parameters predict NaN or infinity on the training data; kept "
                f"earlier ones that do not. Lower learning_rate (now {learning_rate:g}; the default is 0.1) "
                "or power.",
                ConvergenceWarning,
                stacklevel=4,
            )
            return
    raise ValueError(
        "Training gave no parameters that predict finite values on the training data. Lower learning_rate "
        f"(now {learning_rate:g}; the default is 0.1) or power."
    )


def _finite_everywhere(network, X):
    """Whether the network's logits are finite on every row of X (numpy for the CPU speed variant,
    else a tensor), computed in chunks of about 2 MB of weights. Shepard weights rescale each row
    before any power, so that finite parameters give finite logits on finite rows: for them, the
    parameters are checked instead of the rows."""
    if network.shepard:
        return all(bool(torch.isfinite(p).all()) for p in network.parameters())
    with np.errstate(all="ignore"):  # what overflows is found below
        predict = _fast.predictor(network) if isinstance(X, np.ndarray) else None
    rows = max(1, 2**19 // max(len(network.keys), 1))
    with torch.inference_mode():
        for start in range(0, len(X), rows):
            if predict is not None:
                with np.errstate(all="ignore"):
                    finite = np.isfinite(predict(X[start : start + rows])).all()
            else:
                finite = bool(torch.isfinite(network(X[start : start + rows])).all())
            if not finite:
                return False
    return True
