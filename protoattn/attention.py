"""Attention scores over prototypes: pure functions ``(X[n, d], K[m, d]) -> scores[n, m]``.

The attention weights are always ``softmax(scores, dim=1)``. Every registered score takes the
keyword arguments ``power`` and ``eps`` so the network can call any of them the same way; the
dot-product family ignores them.

References
----------
McCarter, "Inverse distance weighting attention", NeurIPS 2023 Associative Memory workshop
(arXiv:2310.18805) -- ``idw`` and its comparison set ``inv_dist``, ``neg_dist``, ``gaussian``, ``dot``.
Gros, "Reducing the cost of ... expressive attention" (2024, arXiv:2407.18601) -- ``expressive``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "ATTENTIONS",
    "cosine",
    "dot",
    "expressive",
    "gaussian",
    "idw",
    "inv_dist",
    "neg_dist",
    "squared_distances",
]


def squared_distances(X: Tensor, K: Tensor) -> Tensor:
    """``‖x - k‖²`` for every pair, through one matmul: ``‖x‖² - 2 x·k + ‖k‖²``, clamped at 0."""
    d2 = torch.addmm((K * K).sum(1), X, K.T, alpha=-2.0)
    d2 += (X * X).sum(1, keepdim=True)
    return d2.clamp_(min=0.0)


def _log_sq_distances(X: Tensor, K: Tensor) -> Tensor:
    # An exact hit (distance 0) becomes the smallest normal float instead of log(0) = -inf, so that
    # gradients stay finite; log(tiny) is far below any log(eps) that matters.
    return squared_distances(X, K).clamp_(min=torch.finfo(X.dtype).tiny).log_()


def _capped_exp(log_scores: Tensor) -> Tensor:
    # Capped a factor e below the largest float: scores that would overflow (a huge power, a far
    # query, eps = 0 on a hit) stay finite, so softmax never computes inf - inf and gradients stay finite.
    return torch.exp(log_scores.clamp_(max=math.log(torch.finfo(log_scores.dtype).max) - 1.0))


def idw(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Inverse distance weighting: ``-log(eps + ‖x - k‖^p)`` (McCarter 2023, eq. 2).

    Under softmax this gives Shepard's weights ``a_i ∝ 1 / (eps + ‖x - k_i‖^p)``. Computed in log
    space as ``-logaddexp(log eps, (p/2) log ‖x - k‖²)``, so no power ever overflows and a query that
    hits a prototype exactly gets the finite score ``-log eps``.
    """
    log_dp = _log_sq_distances(X, K).mul_(0.5 * power)
    if eps == 0:
        return log_dp.neg_()
    return torch.logaddexp(log_dp, torch.tensor(math.log(eps), dtype=X.dtype, device=X.device)).neg_()


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
    return (X @ K.T).div_(math.sqrt(max(X.shape[1], 1)))


def cosine(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Cosine similarity ``x·k / (‖x‖ ‖k‖)``; a zero vector has similarity 0 to everything."""
    return torch.nn.functional.normalize(X, dim=1) @ torch.nn.functional.normalize(K, dim=1).T


def expressive(X: Tensor, K: Tensor, *, power: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Expressive attention: ``(x·k)² / d`` (Gros 2024, eq. 3)."""
    return (X @ K.T).square_().div_(max(X.shape[1], 1))


ScoreFunction = Callable[..., Tensor]

#: Registered scores by name, as accepted by ``IDWAttentionClassifier(attention=...)``.
ATTENTIONS: dict[str, ScoreFunction] = {
    "idw": idw,
    "inv_dist": inv_dist,
    "neg_dist": neg_dist,
    "gaussian": gaussian,
    "dot": dot,
    "cosine": cosine,
    "expressive": expressive,
}
