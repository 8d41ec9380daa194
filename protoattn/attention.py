"""Attention scores over prototypes: pure torch functions ``(X[n, d], K[m, d]) -> scores[n, m]``.

The attention weights are ``softmax(scores, dim=1)`` (the network, :mod:`protoattn._network`, takes
it). Every registered score takes the keyword arguments ``power`` and ``eps``, so the network calls
all of them the same way; the dot-product family ignores them. Missing coordinates of X (NaN) are
skipped by distances (:func:`squared_distances`) and count as 0, the training mean, in products.

References
----------
McCarter, "Inverse distance weighting attention", NeurIPS 2023 Associative Memory workshop
(arXiv:2310.18805) -- ``idw`` and its comparison set ``inv_dist``, ``neg_dist``, ``gaussian``, ``dot``.
Gros, "Reducing the cost of ... expressive attention" (2024, arXiv:2407.18601) -- ``expressive``.
Song, Jung, Kim and Moon, "Implicit Kernel Attention", AAAI 2021 (arXiv:2006.06147) -- ``kernel``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "ATTENTIONS",
    "BOUNDED_ATTENTIONS",
    "SOFTMAX_FREE",
    "ImplicitKernel",
    "cosine",
    "dot",
    "expressive",
    "gaussian",
    "idw",
    "inv_dist",
    "neg_dist",
    "relu",
    "scale_features",
    "squared_distances",
]


def squared_distances(X: Tensor, K: Tensor) -> Tensor:
    """``‖x - k‖²`` for every pair through one matmul, ``‖x‖² - 2 x·k + ‖k‖²``, clamped at 0 (rounding
    can take it slightly below).

    Where x has missing coordinates (NaN), the sum runs over its observed ones and is rescaled by
    ``d / d_observed``, as in :func:`sklearn.metrics.pairwise.nan_euclidean_distances`, so that rows
    with and without missing values stay comparable.
    """
    observed = ~X.isnan()
    # Exported graphs (torch.compiler) take the general form, which cannot branch on the data.
    if not torch.compiler.is_compiling() and bool(observed.all()):
        return (X.square().sum(1, keepdim=True) - 2.0 * (X @ K.T) + K.square().sum(1)).clamp_(min=0.0)
    X, observed = X.nan_to_num(), observed.to(X.dtype)
    d2 = (X.square().sum(1, keepdim=True) - 2.0 * (X @ K.T) + observed @ K.square().T).clamp_(min=0.0)
    return d2 * (X.shape[1] / observed.sum(1, keepdim=True).clamp(min=1.0))


def scale_features(X: Tensor, scales: Tensor) -> Tensor:
    """``X * scales`` with missing entries (NaN) kept missing and no NaN in the scales' gradient
    (``NaN * 0`` would be NaN)."""
    return torch.where(X.isnan(), X, X.nan_to_num() * scales)


def _log_sq_distances(X: Tensor, K: Tensor) -> Tensor:
    # An exact hit becomes the smallest normal float instead of log(0) = -inf: gradients stay finite.
    return squared_distances(X, K).clamp_(min=torch.finfo(X.dtype).tiny).log_()


def _capped_exp(log_scores: Tensor) -> Tensor:
    # Capped a factor e below the largest float, so that softmax never computes inf - inf.
    return torch.exp(log_scores.clamp(max=math.log(torch.finfo(log_scores.dtype).max) - 1.0))


def idw(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Inverse distance weighting: ``-log(eps + ‖x - k‖^p)`` (McCarter 2023, eq. 2).

    Under softmax this gives Shepard's weights ``a_i ∝ 1 / (eps + ‖x - k_i‖^p)``. Computed in log
    space, ``-logaddexp(log eps, (p/2) log ‖x - k‖²)``, so that no power overflows and a query on a
    prototype gets the finite score ``-log eps``.
    """
    log_dp = _log_sq_distances(X, K) * (0.5 * power)
    if eps == 0:
        return -log_dp
    return -torch.logaddexp(log_dp, torch.tensor(math.log(eps), dtype=X.dtype, device=X.device))


def inv_dist(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Inverse distance used directly as a score: ``1 / (eps + ‖x - k‖^p)`` (McCarter 2023)."""
    return _capped_exp(idw(X, K, power=power, eps=eps))


def neg_dist(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Negative distance: ``-‖x - k‖^p`` (McCarter 2023)."""
    return -_capped_exp(_log_sq_distances(X, K).mul_(0.5 * power))


def gaussian(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Gaussian similarity: ``exp(-½ ‖x - k‖^p)`` (McCarter 2023)."""
    return torch.exp(-0.5 * _capped_exp(_log_sq_distances(X, K).mul_(0.5 * power)))


def dot(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Scaled dot product: ``x·k / √d`` (Vaswani et al. 2017)."""
    return (X.nan_to_num() @ K.T).div_(math.sqrt(max(X.shape[1], 1)))


def cosine(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Cosine similarity ``x·k / (‖x‖ ‖k‖)``; a zero vector has similarity 0 to everything."""
    return torch.nn.functional.normalize(X.nan_to_num(), dim=1) @ torch.nn.functional.normalize(K, dim=1).T


def expressive(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Expressive attention: ``(x·k)² / d`` (Gros 2024, eq. 3)."""
    return (X.nan_to_num() @ K.T).square_().div_(max(X.shape[1], 1))


def relu(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """The IDW attention paper's fully-connected baseline: ``relu(x·k)``, used *without* softmax.

    With it the network is a one-hidden-layer ReLU net, ``logits = relu(X Kᵀ) V``: not attention.
    """
    return torch.relu(X.nan_to_num() @ K.T)


def _lp_norm(K: Tensor, p: float) -> Tensor:
    """``‖k‖_p`` per row, scaled by the largest entry so that no power over- or underflows."""
    tiny = torch.finfo(K.dtype).tiny
    largest = K.abs().amax(1, keepdim=True).clamp(min=tiny)
    ratios = (K.abs() / largest).clamp(min=tiny)  # > 0: finite gradients for p < 1
    return largest.squeeze(1) * ratios.pow(p).sum(1).pow(1.0 / p)


class ImplicitKernel(nn.Module):
    """Implicit kernel attention (Song et al. 2021): ``score = log κ(x - k) + ‖k‖_p² / (2√d)``.

    Dot-product attention factors as ``exp(x·k/√d) = κ_RBF(x, k) exp(‖x‖²/(2√d)) exp(‖k‖²/(2√d))``
    with an RBF kernel of bandwidth ``√√d`` (Song et al., eq. 4); the query term cancels in softmax.
    Here the kernel is learned: a stationary kernel whose spectral density is a mixture of zero-mean
    Gaussians with per-feature scales, ``κ(δ) = Σ_j π_j exp(-½ Σ_f s_jf² δ_f²)``, and the magnitude
    term uses the Lᵖ norm of the key (Song et al., IKAN), with ``p = power``.

    The components start at ``1, 2, 4, 8`` times the dot-product bandwidth's inverse, equally
    weighted: with one component at exactly ``s = d^(-1/4)`` and p = 2 the weights equal ``dot``'s, and
    the mixture starts close to them. None starts wider, since a wider kernel leaves the magnitude term
    unmatched: its score then grows with ``‖k‖²`` and a key of large norm takes every row's weight.
    """

    def __init__(self, n_features: int, n_components: int = 4):
        super().__init__()
        base = -0.25 * math.log(max(n_features, 1))
        offsets = math.log(2.0) * torch.arange(n_components, dtype=torch.float32)
        self.mixture_logits = nn.Parameter(torch.zeros(n_components))
        self.log_scales = nn.Parameter((base + offsets)[:, None].repeat(1, max(n_features, 1)))

    def forward(self, X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
        d = max(X.shape[1], 1)
        scales = self.log_scales.exp()
        log_mixture = torch.log_softmax(self.mixture_logits, 0)
        log_kernel = torch.logsumexp(
            torch.stack(
                [
                    w - 0.5 * squared_distances(scale_features(X, s), K * s)
                    for w, s in zip(log_mixture, scales, strict=True)
                ]
            ),
            dim=0,
        )
        return log_kernel + _lp_norm(K, power).square_() / (2.0 * math.sqrt(d))


ScoreFunction = Callable[..., Tensor]

#: Registered scores by name, as accepted by ``IDWAttentionClassifier(attention=...)``. Each entry is a
#: function ``(X, K, *, power, eps) -> scores``, or an ``nn.Module`` class built with ``n_features``
#: whose instances are such functions with learned parameters.
ATTENTIONS: dict[str, ScoreFunction | type[nn.Module]] = {
    "idw": idw,
    "inv_dist": inv_dist,
    "neg_dist": neg_dist,
    "gaussian": gaussian,
    "dot": dot,
    "cosine": cosine,
    "expressive": expressive,
    "kernel": ImplicitKernel,
    "relu": relu,
}

#: Scores where a patch's radius means something (see ``IDWAttentionClassifier.add_prototype``): the
#: distance scores and the learned kernel, a function of ``x - k`` plus a term of the key alone. A
#: prototype's weight is 0 beyond its reach whatever the score, but only for these is "near x" where
#: the score is large; the product scores, ``relu`` (no softmax) and user functions have no radius.
BOUNDED_ATTENTIONS = frozenset({"idw", "inv_dist", "neg_dist", "gaussian", "kernel"})

#: Scores used as the weights directly, without softmax.
SOFTMAX_FREE = frozenset({"relu"})
