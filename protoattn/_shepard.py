"""Shepard's weights in closed form, and the written-out training step of a network that uses them,
written once for two array libraries: numpy arrays for the training step on the CPU, torch tensors
for everything else (prediction, other devices, autograd, tracers).

Why numpy for the step: a training step is about 70 operations on a batch-by-prototypes matrix
(256 × 100 at the defaults), and torch spends 5-10 µs dispatching each one where numpy spends 1-3
µs, so the same arithmetic runs in about half the time (``benchmarks/RESULTS.md``). Prediction works
on chunks of thousands of rows, where dispatch no longer shows and torch's row minima and broadcasts
are twice as fast as numpy's; at one scale on the CPU, one compiled loop replaces the passes after
the distance product (:mod:`protoattn._fused`). The arrays share the tensors' memory: nothing is
copied. What the two libraries spell differently is in :class:`NumpyOps` and :class:`TorchOps`;
everything else is written with Python's operators, which both libraries run in place for ``*=``,
``+=`` and the like.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._compute import _numpy, matmul


class NumpyOps:
    """The operations that numpy and torch spell differently, for numpy arrays."""

    matmul = staticmethod(np.matmul)
    finfo = staticmethod(np.finfo)

    @staticmethod
    def squared_norms(a):
        return np.einsum("ij,ij->i", a, a)

    @staticmethod
    def row_min(a):
        return a.min(1, keepdims=True)

    @staticmethod
    def ones(n, like):
        return np.ones(n, dtype=like.dtype)

    @staticmethod
    def min_max(a):
        return a.min(), a.max()

    @staticmethod
    def number(value, like):
        """``value`` as what :meth:`product_plus_` adds fastest: here the number itself."""
        return value

    @staticmethod
    def with_ones_column(a, zeros=0):
        """``[a, 1]``, then ``zeros`` columns of zeros."""
        return np.concatenate([a, np.ones((len(a), 1), dtype=a.dtype), np.zeros((len(a), zeros), dtype=a.dtype)], 1)

    @staticmethod
    def take_rows(a, rows):
        return np.take(a, rows, axis=0)  # twice as fast as a[rows]

    @staticmethod
    def nonzero(a):
        return np.flatnonzero(a)

    @staticmethod
    def clip_(a, low, high=None):
        # Both bounds always: numpy's clip with one bound takes a loop twice as slow (15 µs against
        # 7 µs on a 256 × 100 float32 batch).
        return np.clip(a, -np.inf if low is None else low, np.inf if high is None else high, out=a)

    @staticmethod
    def reciprocal_(a):
        return np.reciprocal(a, out=a)

    @staticmethod
    def log(a):
        return np.log(a)

    @staticmethod
    def log_(a):
        return np.log(a, out=a)

    @staticmethod
    def exp_(a):
        return np.exp(a, out=a)

    @staticmethod
    def scale_shift(a, scale, shift):
        """``a * scale + shift``, into ``a``."""
        a *= scale
        a += shift
        return a

    @staticmethod
    def product_plus_(a, b, plus=None):
        """``a * b (+ plus)`` for a number ``plus`` (or one from :meth:`number`), into ``a``."""
        a *= b
        if plus is not None:
            a += plus
        return a

    @staticmethod
    def softmax_and_log_at(a, y):
        """``softmax(a)`` over each row, and ``log softmax(a)[i, y[i]]`` for every row i.

        Each row's maximum is subtracted only when some entry is outside :func:`unshifted_softmax_limit`
        (logits are averages of value rows: nearly always within); the row sums are a product with
        ones. Three times faster than a log-softmax with both on a 256-row batch of ten classes,
        where numpy's reductions over rows of ten numbers are slow. (Not scipy.special.log_softmax
        either: its handling of infinite rows costs 20 µs more.)"""
        limit = unshifted_softmax_limit(np.finfo(a.dtype))
        if not (-limit <= a.min() and a.max() <= limit):  # also when NaN, which then propagates
            a = a - a.max(1, keepdims=True)
        e = np.exp(a)
        sums = e @ np.ones(a.shape[1], dtype=a.dtype)
        log_at = NumpyOps.pick(a, y) - np.log(sums)
        e *= (1.0 / sums)[:, None]
        return e, log_at

    @staticmethod
    def add_at_labels_(a, y, value):
        """``a[i, y[i]] += value`` for every row i."""
        a[np.arange(len(a)), y] += value
        return a

    @staticmethod
    def pick(a, y):
        """``a[i, y[i]]`` for every row i."""
        return a[np.arange(len(a)), y]


class TorchOps:
    """The same for torch tensors (products through :func:`protoattn._compute.matmul`)."""

    matmul = staticmethod(matmul)
    finfo = staticmethod(torch.finfo)

    @staticmethod
    def squared_norms(a):
        # One pass with no (n, d) temporary, unlike (a * a).sum(1): an order of magnitude faster on big a.
        return torch.linalg.vector_norm(a, dim=1).square()

    @staticmethod
    def row_min(a):
        return a.amin(1, keepdim=True)

    @staticmethod
    def ones(n, like):
        return torch.ones(n, dtype=like.dtype, device=like.device)

    @staticmethod
    def min_max(a):
        return a.aminmax()  # one pass: twice as fast as two on a chunk's row sums

    @staticmethod
    def number(value, like):
        # A 0-d tensor, made once: making one costs as much as a pass over a few thousand numbers.
        return torch.tensor(value, dtype=like.dtype, device=like.device)

    @staticmethod
    def with_ones_column(a, zeros=0):
        ones = torch.ones((len(a), 1), dtype=a.dtype, device=a.device)
        return torch.cat([a, ones, torch.zeros((len(a), zeros), dtype=a.dtype, device=a.device)], 1)

    @staticmethod
    def take_rows(a, rows):
        return a.index_select(0, rows)

    @staticmethod
    def nonzero(a):
        return a.nonzero()[:, 0]

    @staticmethod
    def clip_(a, low, high=None):
        return a.clamp_(low, high)

    @staticmethod
    def reciprocal_(a):
        return a.reciprocal_()

    @staticmethod
    def log(a):
        return a.log()

    @staticmethod
    def log_(a):
        return a.log_()

    @staticmethod
    def exp_(a):
        return a.exp_()

    @staticmethod
    def scale_shift(a, scale, shift):
        # Not torch.addcmul: with broadcast operands it runs three times slower than these two passes.
        return a.mul_(scale).add_(shift)

    @staticmethod
    def product_plus_(a, b, plus=None):
        if plus is None:
            return a.mul_(b)
        # One pass, a third faster than two with a number; but see scale_shift.
        if not isinstance(plus, torch.Tensor):
            plus = TorchOps.number(plus, a)
        return torch.addcmul(plus, a, b, out=a)

    @staticmethod
    def softmax_and_log_at(a, y):
        log_p = torch.log_softmax(a, dim=1)
        return log_p.exp(), TorchOps.pick(log_p, y)

    @staticmethod
    def add_at_labels_(a, y, value):
        return a.scatter_add_(1, y[:, None], torch.full((len(a), 1), value, dtype=a.dtype, device=a.device))

    @staticmethod
    def pick(a, y):
        return a.gather(1, y[:, None]).view(-1)


def unshifted_softmax_limit(info) -> float:
    """How far from 0 all logits may lie for a softmax to skip subtracting each row's maximum: half
    the log of the largest float (±44 in float32, ±354 in float64), where no exponential can overflow
    (nor their sum over fewer than 10^19 classes) and no row's largest can underflow."""
    return 0.5 * math.log(info.max)


def ops_for(a):
    return NumpyOps if isinstance(a, np.ndarray) else TorchOps


def _whole(q: float) -> bool:
    return float(q).is_integer() and 1 <= q <= 64


def raise_(ops, x, q: float, plus: float | None = None):
    """``x ** q`` (``+ plus``) for positive x, overwriting x: repeated squaring for a whole q up to 64
    (one pass over x per squaring or product, the last one adding ``plus`` in the same pass), else
    ``exp(q log x)`` (a power with a float exponent is several times slower than either)."""
    if not _whole(q):
        x = ops.log_(x)
        x *= q
        x = ops.exp_(x)
    elif q == 1:
        pass
    elif q == 2:
        return ops.product_plus_(x, x, plus)
    elif q % 2 == 0:
        x *= x
        return raise_(ops, x, q // 2, plus)
    else:
        return ops.product_plus_(x, raise_(ops, x * x, q // 2), plus)  # x · (x²)^((q - 1) / 2)
    if plus is not None:
        x += plus
    return x


def power(ops, x, q: float):
    """``x ** q`` like :func:`raise_`, into a new array."""
    if not _whole(q):
        y = ops.log(x)
        y *= q
        return ops.exp_(y)
    if q == 1:
        return x * 1.0
    y = raise_(ops, x * x, q // 2)
    if q % 2:
        y *= x
    return y


def distances_less_query_norms(ops, X, K, sq_scales=None):
    """``‖x - k‖² - ‖x‖² = ‖k‖² - 2 x·k`` for every pair, through one product; with a diagonal
    metric's squared scales ``s²``, ``‖s ∘ (x - k)‖² - ‖s ∘ x‖² = ‖s ∘ k‖² - 2 x·(s² ∘ k)``: the
    metric goes into the keys, so the queries are never rescaled."""
    keys_t, key_norms = _key_terms(ops, K, sq_scales)
    partial = ops.matmul(X, keys_t)
    partial += key_norms
    return partial


def _key_terms(ops, K, sq_scales=None):
    """What :func:`distances_less_query_norms` takes from the keys alone: ``-2 (s² ∘ K)ᵀ`` and
    ``‖s ∘ k‖²`` (no metric: ``-2 Kᵀ`` and ``‖k‖²``)."""
    if sq_scales is None:
        return K.T * -2.0, ops.squared_norms(K)
    metric_keys = K * sq_scales
    return metric_keys.T * -2.0, ops.matmul(metric_keys * K, ops.ones(K.shape[1], K))


def _hit(eps: float, q: float, info) -> float:
    """The squared distance where ``d^p = eps`` (``q = p/2``), at most the largest float."""
    return math.exp(min(math.log(eps) / q, math.log(info.max)))


def _power_floor(q: float, info):
    """Where ratios are floored before ``ratio^q``: rounding leaves them slightly below 0 at a hit
    (the product's error grows with ‖x‖² + ‖k‖²), which an odd power would keep and a power through
    logarithms cannot take; an even power needs nothing (None)."""
    if not _whole(q):
        return float(info.tiny)
    return None if q % 2 == 0 else 0.0


def ratios(X, K, power_: float, eps: float, *, sq_scales=None, grad: bool = False, x2=None):
    """Shepard's unnormalised weights ``r_i ∝ 1 / (eps + ‖x - k_i‖^p)`` (McCarter 2023, eq. 2 under
    softmax), each row rescaled as in :func:`protoattn.attention.idw_weights` (so only ratios within a
    row mean anything), for ``eps > 0``; numpy arrays or torch tensors. With ``sq_scales`` (``s²``)
    the distances are those of the diagonal metric, ``‖s ∘ (x - k)‖``; ``x2`` may give the queries'
    ``‖s ∘ x‖²`` when the caller has them.

    Returns ``(r, sensitivity)``; with ``grad=True`` ``sensitivity`` is ``(p/2) σ / ‖x - k‖²`` (see
    :func:`protoattn.attention.idw_weights`), which :func:`distance_grad` needs, else None.
    """
    ops = ops_for(X)
    q = 0.5 * power_
    info = ops.finfo(X.dtype)
    # ‖x - k‖² less ‖x‖², which is constant along a row: added below, with the division by the floor.
    partial = distances_less_query_norms(ops, X, K, sq_scales)
    if x2 is None:
        x2 = ops.squared_norms(X) if sq_scales is None else ops.matmul(X * X, sq_scales)
    x2 = x2[:, None]
    floor = ops.row_min(partial)
    floor += x2
    floor = ops.clip_(floor, max(_hit(eps, q, info), float(info.tiny)))
    inverse = 1.0 / floor
    ratio = ops.scale_shift(partial, inverse, x2 * inverse)  # ‖x - k‖² / floor
    # Floored for the power (see _power_floor); with gradients, capped where ratio^q would overflow,
    # so that σ = z r stays finite.
    low = _power_floor(q, info)
    cap = math.exp(min(math.log(info.max / 4) / q, math.log(info.max))) if grad else None
    if low is not None or cap is not None:
        ratio = ops.clip_(ratio, low, cap)
    e = power(ops, inverse, q)
    e *= eps  # eps / floor^(p/2), at most 1 as floor >= eps^(2/p)
    if not grad:
        z = raise_(ops, ratio, q)  # (‖x - k‖^p) / floor^(p/2)
        z += e
        return ops.reciprocal_(z), None
    if _whole(q) and q > 1:
        # ratio^(q - 1) by squaring, then z = ratio^q from it: a pass and a division fewer than
        # dividing z by the ratio.
        sensitivity = power(ops, ratio, q - 1)
        z = sensitivity * ratio
    else:
        # z / ratio = ratio^(q - 1), unbounded at a hit when p < 2 (the slope of d^p at 0): bounded
        # there by flooring the ratio at the float's resolution.
        z = power(ops, ratio, q)
        sensitivity = z / ops.clip_(ratio, float(info.eps))
    z += e
    r = ops.reciprocal_(z)
    sensitivity *= r
    sensitivity *= q * inverse
    return r, sensitivity  # (p/2) σ / ‖x - k‖² with σ = z r


class AtScale:
    """Shepard's unnormalised weights like :func:`ratios` (no gradient), with one squared distance
    ``scale`` for all rows instead of each row's nearest one, ``r_i = 1 / (eps / scale^q + (‖x -
    k_i‖² / scale)^q)`` with ``q = p/2``, followed by a product with a fixed matrix. For prediction:
    what depends on the keys alone is computed once for all row chunks, and the division by the
    scale goes into the product, so a chunk takes three passes over its (n, m) matrix fewer than
    with :func:`ratios` (no row minima, no rescaling of each row). On the CPU, for a whole ``q``,
    everything after the distance product is one compiled pass (:mod:`protoattn._fused`).

    The price: a row whose nearest distance is far from ``scale`` can overflow or underflow;
    :meth:`untrusted` tells from the product's row sums which rows to compute again with
    :func:`ratios`.

    Parameters
    ----------
    keys, sq_scales, power_, eps
        As for :func:`ratios` (``sq_scales`` None: no metric).
    scale : float
        A squared distance typical of a query's nearest key; raised to ``eps^(2/p)`` when below it,
        so that ``eps / scale^q <= 1``.
    right : array of shape (m, c)
        The matrix the weights multiply; a column of ones is appended, whose product gives the row
        sums.
    """

    def __init__(self, keys, sq_scales, power_: float, eps: float, scale: float, right):
        ops = ops_for(keys)
        info = ops.finfo(keys.dtype)
        self.q = 0.5 * power_
        scale = max(scale, _hit(eps, self.q, info))
        sq_scales = (1.0 / scale) * (ops.ones(keys.shape[1], keys) if sq_scales is None else sq_scales)
        self.sq_scales = sq_scales
        self.keys_t, self.key_norms = _key_terms(ops, keys, sq_scales)  # as distances_less_query_norms
        # eps / scale^q (may underflow)
        self.eps_value = math.exp(math.log(eps) - self.q * math.log(scale))
        self.eps_term = ops.number(self.eps_value, keys)
        self.low = _power_floor(self.q, info)
        # The passes after the distance product compiled into one where they can: on the CPU, for
        # a whole q (protoattn._fused: a fifth to a quarter of predict_proba's time).
        self.fused = _fused_weights() if _whole(self.q) and _on_cpu(keys) else None
        # [right, 1], and a column of zeros when that makes a multiple of 4 columns: OpenBLAS's
        # kernels multiply by 12 columns faster than by 11 (19 % in float64, 8 % in float32 on a
        # chunk; likewise 3 and 7, while other widths padded to 4's multiples were sometimes slower).
        self.width = right.shape[1] + 1
        self.right = ops.with_ones_column(right, zeros=1 if self.width % 4 == 3 else 0)
        # The bounds on the row sums S = Σ_i r_i (see untrusted).
        m, largest = len(keys), max(float(abs(self.right).max()), 1.0)
        self.sum_bounds = (
            m * m / (float(info.max) * float(info.eps)),
            min(float(info.eps) / float(info.tiny), float(info.max) / (m * largest)),
        )

    def __call__(self, X):
        """The weights r (n, m) and their product with ``[right, 1]`` (n, c + 1)."""
        ops = ops_for(X)
        if self.fused is not None:  # ‖s ∘ x‖², the additions, the power and the reciprocal in one pass
            ratio = ops.matmul(X, self.keys_t)
            arrays = map(_array, (ratio, X, self.sq_scales, self.key_norms))
            self.fused(*arrays, self.eps_value, int(self.q), self.low)
            return ratio, self.product(ratio)
        # ‖s ∘ x‖² first, while X is in the cache (prediction has just checked it): then the
        # product's (n, m) result stays there for the passes that follow (2-6 % faster).
        x2 = ops.matmul(X * X, self.sq_scales)[:, None]
        ratio = ops.matmul(X, self.keys_t)
        ratio += self.key_norms
        ratio += x2
        if self.low is not None:
            ratio = ops.clip_(ratio, self.low)
        r = ops.reciprocal_(raise_(ops, ratio, self.q, plus=self.eps_term))
        return r, self.product(r)

    def product(self, r):
        """``r @ [right, 1]``, shape (n, c + 1)."""
        return ops_for(r).matmul(r, self.right)[:, : self.width]

    def untrusted(self, product):
        """The rows of a product from :meth:`__call__` that may not hold Shepard's weights to
        rounding (an index array; None when there are none), from their sums ``S = Σ_i r_i`` (the
        last column), the largest ``r_i`` being in ``[S / m, S]``. A row is trusted when ``1 /
        r_max`` (the nearest key's ``eps / scale^q + z``) lies where no key that matters can have
        overflowed (``z <= max · eps_mach / m``: keys dropped as infinite weigh less than the
        rounding), where ``eps / scale^q``, had it underflowed, is below the rounding (``1 / r_max
        >= tiny / eps_mach``), and where no entry of the product can overflow; never when NaN."""
        low, high = self.sum_bounds
        sums = product[:, -1]
        smallest, largest = ops_for(sums).min_max(sums)
        if low <= float(smallest) and float(largest) <= high:  # the usual case
            return None
        return ops_for(sums).nonzero(~((sums >= low) & (sums <= high)))


def _fused_weights():
    # Imported at the first prediction that needs it: importing numba takes half a second.
    from ._fused import shepard_weights_

    return shepard_weights_


def _on_cpu(a) -> bool:
    return isinstance(a, np.ndarray) or a.is_cpu


def _array(a):
    """A numpy view of a CPU tensor (or the array itself)."""
    return a if isinstance(a, np.ndarray) else _numpy(a)


def distance_grad(weighted_sensitivity, grad_weights, mean):
    """Gradient of a loss with respect to the squared distances, from its gradient ``g`` with respect
    to the normalised Shepard weights ``a``, overwriting ``grad_weights``: softmax's Jacobian, then
    the score's, ``a (p/2) σ / ‖x - k‖² (Σ_j a_j g_j - g)``, with ``mean = Σ_j a_j g_j`` per row
    (shape (n, 1)). Returned negated, ``-dL/d‖x - k‖²``, which saves a pass: callers fold the sign
    into what they compute from it."""
    grad_weights -= mean
    grad_weights *= weighted_sensitivity
    return grad_weights


def loss_and_grads(X, y, w, keys, values, log_scales, learn_scales: bool, power_: float, eps: float):
    """``Σ_i w_i CE(logits(x_i), y_i)`` of a network with Shepard weights, and the gradients of its mean
    over the rows with respect to the keys, the values and (when ``learn_scales``) the log-scales of
    its diagonal metric (``log_scales`` None: no metric), with no graph and every product through
    BLAS; numpy arrays or torch tensors (no autograd).
    """
    ops = ops_for(X)
    n = len(X)
    # The metric's s² multiplies the keys (see distances_less_query_norms); X² serves both ‖s ∘ x‖²
    # and the gradient of the scales.
    sq_scales = None if log_scales is None else ops.exp_(log_scales * 2.0)
    X2 = X * X if sq_scales is not None else None
    x2 = None if X2 is None else ops.matmul(X2, sq_scales)
    r, sensitivity = ratios(X, keys, power_, eps, sq_scales=sq_scales, grad=True, x2=x2)
    # The weights are r / Σ r: the row sums come from the logits' product (the values with a column
    # of ones), and the division is folded into (n, n_classes) matrices instead of a pass over r.
    sums = ops.matmul(r, ops.with_ones_column(values))
    inverse_sums = 1.0 / sums[:, -1:]
    logits = sums[:, :-1] * inverse_sums
    p, log_p_at_labels = ops.softmax_and_log_at(logits, y)
    weighted = -(log_p_at_labels @ w)
    # d/dlogits of the mean of w·CE: (softmax - one-hot) w / n; here also divided by Σ r.
    grad_logits = ops.add_at_labels_(p, y, -1.0)
    grad_logits *= (w * (1.0 / n))[:, None]
    # Σ_j a_j (dL/da_j) = Σ_c (dL/dlogit_c) logit_c: over the classes instead of the prototypes
    # (row sums as a product: see softmax_and_log_at).
    mean = ops.matmul(grad_logits * logits, ops.ones(logits.shape[1], logits))[:, None]
    mean *= inverse_sums
    grad_logits *= inverse_sums
    grad_values = ops.matmul(r.T, grad_logits)
    sensitivity *= r
    # G = -dL/d‖s ∘ (x - k)‖²; through Σ_j s_j² (x_j² - 2 x_j k_j + k_j²) to the keys:
    # dL/dk_i = -2 s² ∘ Σ_n G_ni (k_i - x_n) = 2 s² ∘ (cross_i - (Σ_n G_ni) k_i), with cross = Gᵀ X.
    G = distance_grad(sensitivity, ops.matmul(grad_logits, values.T), mean)
    cross = ops.matmul(G.T, X)
    column_sums = ops.matmul(ops.ones(n, G), G)[:, None]  # sums as products: a third of the time
    grad_keys = keys * column_sums
    grad_keys -= cross
    grad_keys *= -2.0
    if sq_scales is not None:
        grad_keys *= sq_scales
    if not learn_scales:
        return weighted, [grad_keys, grad_values]
    # dL/dlog s_j = 2 s_j² Σ_ni (dL/d‖s ∘ (x_n - k_i)‖²) (x_nj - k_ij)²
    #             = -2 s_j² [Σ_n (Σ_i G_ni) x_nj² - Σ_i k_ij (2 cross_ij - (Σ_n G_ni) k_ij)].
    grad_scales = ops.matmul(ops.matmul(G, ops.ones(G.shape[1], G)), X2)
    cross *= 2.0
    cross -= keys * column_sums
    cross *= keys
    grad_scales -= cross.sum(0)
    grad_scales *= sq_scales
    grad_scales *= -2.0
    return weighted, [grad_keys, grad_values, grad_scales]
