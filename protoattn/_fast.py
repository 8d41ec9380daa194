"""The speed variant of the network for Shepard weights on the CPU, in numpy.

With ``attention="idw"`` and ``eps > 0`` the network's weights, ``softmax(-log(eps + ‖x - k‖^p))``,
are Shepard's ``r_i / Σ_j r_j`` with ``r_i = 1 / (eps + ‖x - k_i‖^p)`` (McCarter 2023, eq. 2). This
module computes them in that closed form, without logarithms, with the training step's backward pass
and Adam written out, and every product through numpy's BLAS. It is the only second implementation of
:class:`protoattn._network.PrototypeAttention`, used on the CPU for the default model because it is
several times faster there (``benchmarks/RESULTS.md``), and tested equal to it (values and gradients)
in ``tests/test_fast.py``.
"""

from __future__ import annotations

import math

import numpy as np

from ._tables import to_log


def _whole(q: float) -> bool:
    return float(q).is_integer() and 1 <= q <= 64


def power_(x: np.ndarray, q: float) -> np.ndarray:
    """``x ** q`` for positive x, overwriting x: by repeated squaring for a whole q up to 64, else as
    ``exp(q log x)`` (numpy's float power is several times slower than either)."""
    if not _whole(q):
        return np.exp(np.multiply(np.log(x, out=x), q, out=x), out=x)
    q, result = int(q), None
    while True:
        if q & 1:
            if q == 1:
                return x if result is None else np.multiply(result, x, out=result)
            if result is None:  # keep this power, square into a new array
                result, x = x, np.square(x)
                q >>= 1
                continue
            np.multiply(result, x, out=result)
        q >>= 1
        np.square(x, out=x)


def key_terms(keys, sq_scales):
    """``(-2 s² ∘ K, ‖s ∘ k‖²)`` of shapes (m, d) and (m, 1): the terms of ``‖s ∘ (x - k)‖²`` that
    depend on the keys alone, for the diagonal metric's squared scales ``s²`` (None: no metric)."""
    metric_keys = keys if sq_scales is None else keys * sq_scales
    return metric_keys * -2.0, np.einsum("ij,ij->i", metric_keys, keys)[:, None]


def query_norms(X, sq_scales):
    """``‖s ∘ x‖²`` per row."""
    return np.einsum("ij,ij->i", X, X) if sq_scales is None else (X * X) @ sq_scales


def shepard_ratios(X, x2, keys_terms, power: float, eps: float, *, grad: bool = False, keep=None):
    """Shepard's unnormalised weights ``r_i ∝ 1 / (eps + ‖s ∘ (x - k_i)‖^p)`` for ``eps > 0`` (only
    ratios within a row mean anything), and with ``grad`` the sensitivity ``(p/2) σ / ‖x - k‖²``,
    ``σ = ‖x - k‖^p / (eps + ‖x - k‖^p)``, that the backward pass needs (else None); from the rows'
    :func:`query_norms` ``x2`` and the keys' :func:`key_terms`. Both are returned transposed, of shape
    (m, n): numpy's passes and minima then run along contiguous rows of n queries, several times
    faster than along a query's m distances. With ``grad``, both are 0 where ``keep`` (boolean, (m, n),
    a True in every column: training's attention dropout) is False.

    Each query's distances are divided by its nearest (kept) one, floored where ``d^p = eps``, so that
    its largest ``r_i`` lies in ``[1/2, 1]``: no power overflows and a hit gets ``1 / eps``.
    """
    q = 0.5 * power
    info = np.finfo(X.dtype)
    metric_keys, key_norms = keys_terms
    partial = metric_keys @ X.T  # ‖x - k‖² less ‖x‖², which is constant along a column
    partial += key_norms
    hit = math.exp(min(math.log(eps) / q, math.log(info.max)))  # the squared distance where d^p = eps
    dropped = None if keep is None else ~keep
    floor = np.minimum.reduce(partial if dropped is None else np.where(dropped, np.inf, partial), axis=0)
    floor += x2
    lowest = max(hit, float(info.tiny))
    raised = floor.min(initial=np.inf) < lowest  # some query within d^p = eps of a key
    inverse = 1.0 / np.maximum(floor, lowest, out=floor)
    ratio = partial
    ratio += x2
    e = eps * power_(inverse.copy(), q)  # eps / floor^q <= 1
    if not grad and e.max(initial=0.0) < info.eps / 4:
        # eps lies below half an ulp of every (‖x - k‖² / floor)^q >= 1 (then floor > hit, so every
        # ‖x - k‖² >= floor > 0): r = (floor / ‖x - k‖²)^q in (0, 1], one division per pair.
        return power_(np.divide(floor, ratio, out=ratio), q), None
    ratio *= inverse  # ‖x - k‖² / floor
    if dropped is not None:  # a dropped key's ratio may be below 1 or 0: any finite one serves, r is set to 0
        np.copyto(ratio, 1.0, where=dropped)
    # Rounding leaves a hit's distance slightly below 0, which an odd or fractional power cannot take
    # (elsewhere every ratio is >= 1); with gradients, capped where ratio^q would overflow, so that σ
    # stays finite (bounded beforehand by ‖s ∘ (x - k)‖ <= ‖s ∘ x‖ + ‖s ∘ k‖).
    low = None if not raised or (_whole(q) and q % 2 == 0) else (0.0 if _whole(q) else float(info.tiny))
    high = math.exp(min(math.log(info.max / 4) / q, math.log(info.max))) if grad else None
    if high is not None and np.max(np.square(np.sqrt(x2) + math.sqrt(key_norms.max())) * inverse) <= high:
        high = None
    if low is not None or high is not None:
        np.clip(ratio, -np.inf if low is None else low, np.inf if high is None else high, out=ratio)
    if not grad:
        z = power_(ratio, q)
        z += e
        return np.reciprocal(z, out=z), None
    if _whole(q) and q > 1:
        sensitivity = power_(ratio.copy(), q - 1)
        z = sensitivity * ratio
    else:  # ratio^(q - 1) is unbounded at a hit for p < 2: bounded by flooring the ratio
        z = power_(ratio.copy(), q)
        sensitivity = z / np.maximum(ratio, info.eps)
    z += e
    if dropped is not None:  # r = 1 / inf = 0, and then the sensitivity (finite) too
        np.copyto(z, np.inf, where=dropped)
    r = np.reciprocal(z, out=z)
    sensitivity *= r
    sensitivity *= q * inverse
    return r, sensitivity


def _with_ones(values):
    """``[values, 1]``: a product with it gives the weighted values and the weights' row sums."""
    return np.concatenate([values, np.ones((len(values), 1), dtype=values.dtype)], 1)


def column_sq_scales(network):
    """``s²`` per input column of the network's metric and standardisation, ``(s_f / scale_j)²``
    (None when it is 1 everywhere)."""
    scales = None if network.log_scales is None else network.column_scales().detach().numpy()
    if network.scale is not None:
        standard = 1.0 / network.scale.numpy()
        scales = standard if scales is None else scales * standard
    return None if scales is None else scales * scales


def predictor(network):
    """A function from a numpy chunk of rows to the network's logits ``Σ_i a_i(x) v_i``, or to None
    where a row is not finite (a missing value, which the network takes); for a Shepard network on
    the CPU (None otherwise). Columns of a logarithmic scale are put on it first, as in the network.
    The weights are normalised after the product with the values, by row sums from the same product;
    a prototype's weight is 0 beyond its reach (``network.reach``), as in the network.

    Distances do not change when inputs and keys move together, so the standardisation's offset
    moves into the keys; the rows are shifted too (a copy of each chunk) only where the training
    mean lies farther from the origin than a standard deviation in the model's metric, where
    ``‖x‖² - 2 x·k + ‖k‖²`` would lose more than about a bit of precision."""
    if not network.shepard or network.keys.device.type != "cpu":
        return None
    sq_scales = column_sq_scales(network)
    units = None if network.log_units is None else network.log_units.numpy()
    keys, shift = network.keys.detach().numpy(), None
    keys = keys if units is None else to_log(keys, units)
    if network.offset is not None:
        offset, scale = network.offset.numpy(), network.scale.numpy()
        far = np.dot(sq_scales, offset * offset) > np.dot(sq_scales, scale * scale)  # s² holds 1 / scale²
        shift = offset if far else None
        keys = keys - shift if shift is not None else keys
    terms = key_terms(keys, sq_scales)
    values = _with_ones(network.values.detach().numpy())
    # Prototypes of finite reach: their weight is 0 where the squared distance exceeds reach².
    reach = None if network.reach is None else network.reach.numpy()
    bounded = np.flatnonzero(np.isfinite(reach)) if reach is not None else np.empty(0, dtype=np.intp)
    bounded_terms = (terms[0][bounded], terms[1][bounded])
    bounded_sq_reach = np.square(reach[bounded])[:, None] if len(bounded) else None

    def logits(X):
        X = X if units is None else to_log(X, units)
        X = X if shift is None else X - shift
        with np.errstate(all="ignore"):  # like torch: a far key's power overflows, its weight is then 0
            x2 = query_norms(X, sq_scales)
            if not math.isfinite(x2.sum()):  # NaN or infinite values (or squares beyond the dtype's range)
                return None
            r, _ = shepard_ratios(X, x2, terms, network.power, network.eps)
            if len(bounded):
                d2 = bounded_terms[0] @ X.T
                d2 += bounded_terms[1]
                d2 += x2
                r[bounded] *= ~(np.maximum(d2, 0.0) > bounded_sq_reach)
            sums = r.T @ values
            return sums[:, :-1] / sums[:, -1:]

    return logits


def loss_and_grads(
    X, y, w, keys, values, log_scales, learn_scales: bool, power: float, eps: float, columns=None, keep=None
):
    """``Σ_n w_n CE(logits(x_n), y_n)`` of a Shepard network on complete, standardised rows, and the
    gradients of its mean over the rows with respect to the keys, the values and (when
    ``learn_scales``) the metric's log-scales (``log_scales`` None: no metric), one per feature,
    ``columns`` giving each column's feature (None: one column each); with the weights of row n's
    prototype i dropped where ``keep[i, n]`` is False (a True in every column)."""
    n = len(X)
    sq_scales = None if log_scales is None else np.exp(2.0 * log_scales)
    if sq_scales is not None and columns is not None:
        sq_scales = sq_scales[columns]
    X2 = None if sq_scales is None else X * X  # serves ‖s ∘ x‖² and the scales' gradient
    x2 = query_norms(X, None) if X2 is None else X2 @ sq_scales
    r, sensitivity = shepard_ratios(X, x2, key_terms(keys, sq_scales), power, eps, grad=True, keep=keep)  # (m, n)
    sums = r.T @ _with_ones(values)
    inverse_sums = 1.0 / sums[:, -1:]
    logits_ = sums[:, :-1] * inverse_sums
    shifted = logits_ - logits_.max(1, keepdims=True)
    p = np.exp(shifted)
    row_sums = p.sum(1, keepdims=True)
    rows = np.arange(n)
    weighted = -(shifted[rows, y] - np.log(row_sums[:, 0])) @ w
    # d/dlogits of the mean of w·CE, (softmax - one-hot) w / n; then through a = r / Σ r.
    grad_logits = p / row_sums
    grad_logits[rows, y] -= 1.0
    grad_logits *= (w / n)[:, None]
    mean = (grad_logits * logits_).sum(1, keepdims=True) * inverse_sums  # Σ_j a_j dL/da_j
    grad_logits *= inverse_sums
    grad_values = r @ grad_logits
    # G = -dL/d‖s ∘ (x - k)‖² = a (p/2) σ / ‖x - k‖² (dL/da - Σ_j a_j dL/da_j), in units of 1 / Σ r;
    # here transposed, (m, n).
    G = values @ grad_logits.T
    G -= mean.T
    G *= sensitivity * r
    # Through Σ_j s_j² (x_j - k_j)²: dL/dk_i = 2 s² ∘ (Σ_n G_ni x_n - (Σ_n G_ni) k_i).
    cross = G @ X
    column_sums = G.sum(1)[:, None]
    grad_keys = 2.0 * (cross - keys * column_sums)
    if sq_scales is not None:
        grad_keys *= sq_scales
    if not learn_scales:
        return weighted, [grad_keys, grad_values]
    # dL/dlog s_j = -2 s_j² Σ_ni G_ni (x_nj - k_ij)²
    #             = -2 s_j² [Σ_n (Σ_i G_ni) x_nj² - Σ_i k_ij (2 cross_ij - (Σ_n G_ni) k_ij)].
    grad_scales = G.sum(0) @ X2 - (keys * (2.0 * cross - keys * column_sums)).sum(0)
    grad_scales *= -2.0 * sq_scales
    if columns is not None:
        grad_scales = np.bincount(columns, weights=grad_scales, minlength=len(log_scales)).astype(X.dtype)
    return weighted, [grad_keys, grad_values, grad_scales]


def cosine_decay(step, total_steps):
    """The learning rate's factor at ``step`` of a cosine decay from 1 to 0 over ``total_steps``
    (Loshchilov and Hutter, "SGDR", 2017)."""
    return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


class TrainingStep:
    """One optimisation step of a Shepard network on the CPU: :func:`loss_and_grads`, then Adam
    (Kingma and Ba 2015) with the update of ``torch.optim.Adam`` under a cosine decay of the learning
    rates (one per parameter, a number or an array of one per entry) to 0 over ``total_steps``
    (``anneal=False``: constant rates), on numpy views of the network's parameters. Called with a
    batch ``(X, y, w)`` and the attention dropout's ``keep`` mask (a boolean tensor of shape (m, n), or
    None), returns its weighted loss."""

    def __init__(self, network, learning_rates, total_steps, anneal=True, betas=(0.9, 0.999), eps=1e-8):
        self.network = network
        self.names = [name for name, _ in network.named_parameters()]
        self.params = [p.detach().numpy() for _, p in network.named_parameters()]
        self.rates, self.total_steps, self.anneal = learning_rates, max(total_steps, 1), anneal
        self.betas, self.eps, self.steps = betas, eps, 0
        self.moments = [np.zeros((2, *p.shape), dtype=p.dtype) for p in self.params]  # Adam's m and v
        self.log_scales = None if network.log_scales is None else network.log_scales.detach().numpy()
        self.columns = None if network.column_features is None else network.column_features.numpy()

    def __call__(self, X, y, w, keep=None):
        keys, values = self.params[:2]
        learn_scales = len(self.params) == 3
        power, eps = self.network.power, self.network.eps
        keep = None if keep is None else keep.numpy()
        weighted, grads = loss_and_grads(
            X, y, w, keys, values, self.log_scales, learn_scales, power, eps, self.columns, keep
        )
        self._adam(grads)
        return float(weighted)

    def _adam(self, grads):
        beta1, beta2 = self.betas
        decay = cosine_decay(self.steps, self.total_steps) if self.anneal else 1.0
        self.steps += 1
        first_correction, root_second_correction = 1 - beta1**self.steps, math.sqrt(1 - beta2**self.steps)
        for p, g, (mean, square), rate in zip(self.params, grads, self.moments, self.rates, strict=True):  # views
            mean *= beta1
            mean += (1 - beta1) * g
            square *= beta2
            square += (1 - beta2) * (g * g)
            # rate m̂ / (√v̂ + eps), with m̂ = m / first_correction and √v̂ = √v / root_second_correction
            denominator = np.sqrt(square) + self.eps * root_second_correction
            p -= (rate * decay * root_second_correction / first_correction) * mean / denominator

    def state(self):
        """The step count and Adam's moments by parameter name, as :func:`protoattn._training.train`
        carries them between calls."""
        return {"steps": self.steps, **dict(zip(self.names, self.moments, strict=True))}

    def load_state(self, state):
        self.steps = state["steps"]
        self.moments = [state[n].astype(p.dtype) for n, p in zip(self.names, self.params, strict=True)]
