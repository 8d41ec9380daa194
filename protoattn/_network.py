"""The attention network: ``logits(x) = softmax(score(x, K)) @ V``. No scikit-learn here."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import SOFTMAX_CLOSED_FORMS, ScoreFunction


class PrototypeAttention(nn.Module):
    """One attention layer over learned prototypes.

    Parameters
    ----------
    keys : Tensor of shape (m, d)
        Prototypes in input space.
    values : Tensor of shape (m, n_classes)
        One row of class logits per prototype.
    score : callable ``(X, K, *, power, eps) -> Tensor[n, m]``
        The attention score; see :mod:`protoattn.attention`.
        An ``nn.Module`` score becomes a submodule, so its parameters are trained too.
    power, eps : float
        Passed to ``score``. ``power`` is a plain attribute so training can anneal it.
    softmax : bool, default=True
        Weights are ``softmax(scores)``; ``False`` uses the scores as weights (the FC-ReLU baseline).
    """

    def __init__(
        self, keys: Tensor, values: Tensor, score: ScoreFunction, power: float, eps: float, softmax: bool = True
    ):
        super().__init__()
        self.keys = nn.Parameter(keys)
        self.values = nn.Parameter(values)
        self.score = score
        self.power = power
        self.eps = eps
        self.softmax = softmax

    def scores(self, X: Tensor) -> Tensor:
        return self.score(X, self.keys, power=self.power, eps=self.eps)

    def weights(self, X: Tensor) -> Tensor:
        """Attention weights ``a(x)``, shape (n, m), rows summing to 1 (unless ``softmax=False``)."""
        closed_form = SOFTMAX_CLOSED_FORMS.get(self.score) if self.softmax else None
        if closed_form is not None:
            return closed_form(X, self.keys, power=self.power, eps=self.eps)
        scores = self.scores(X)
        return torch.softmax(scores, dim=1) if self.softmax else scores

    def forward(self, X: Tensor) -> Tensor:
        """Class logits ``Σ_i a_i(x) v_i``, shape (n, n_classes)."""
        # The same product as weights @ values, computed as (valuesᵀ weightsᵀ)ᵀ: MKL is several times
        # faster with the long dimension last when there are few classes.
        return (self.values.T @ self.weights(X).T).T
