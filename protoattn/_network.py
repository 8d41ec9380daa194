"""The attention network, the one definition of the model: ``logits(x) = softmax(score(x, K)) @ V``.

Fit, predict, explain, patching and export all compute through :class:`PrototypeAttention`; the only
other implementation is the CPU speed variant for Shepard weights in :mod:`protoattn._fast`, tested
equal to this one. No scikit-learn here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import idw


class PrototypeAttention(nn.Module):
    """One attention layer over learned prototypes.

    Parameters
    ----------
    keys : Tensor of shape (m, d)
        Prototypes in input space.
    values : Tensor of shape (m, n_classes)
        One row of class logits per prototype.
    score : callable ``(X, K, *, power, eps) -> Tensor[n, m]``
        The attention score (see :mod:`protoattn.attention`); an ``nn.Module`` score becomes a
        submodule, so its parameters are trained too.
    power, eps : float
        Passed to ``score``; ``power`` is a plain attribute so that training can anneal it.
    softmax : bool, default=True
        Weights are ``softmax(scores)``; ``False`` uses the scores as weights (the FC-ReLU baseline).
    log_scales : Tensor of shape (d,), optional
        A diagonal metric: the score sees ``s ∘ x`` and ``s ∘ k`` with ``s = exp(log_scales)``, so
        distances are ``‖s ∘ (x - k)‖`` (relevance learning, Hammer and Villmann 2002).
    learn_scales : bool, default=False
        Whether ``log_scales`` is a trained parameter (else a constant buffer).
    """

    def __init__(
        self,
        keys: Tensor,
        values: Tensor,
        score: Callable[..., Tensor],
        power: float,
        eps: float,
        softmax: bool = True,
        log_scales: Tensor | None = None,
        learn_scales: bool = False,
    ):
        super().__init__()
        self.keys = nn.Parameter(keys)
        self.values = nn.Parameter(values)
        if learn_scales:
            self.log_scales = nn.Parameter(
                torch.zeros(keys.shape[1], dtype=keys.dtype) if log_scales is None else log_scales
            )
        else:
            self.register_buffer("log_scales", log_scales)
        self.score = score
        self.power = power
        self.eps = eps
        self.softmax = softmax

    @property
    def shepard(self) -> bool:
        """Whether the weights are Shepard's (``idw`` under softmax with ``eps > 0``), which
        :mod:`protoattn._fast` computes faster on the CPU."""
        return self.softmax and self.eps > 0 and self.score is idw

    def scores(self, X: Tensor) -> Tensor:
        """Attention scores, shape (n, m), with the metric applied to both sides."""
        K = self.keys
        if self.log_scales is not None:
            scales = self.log_scales.exp()
            X, K = X * scales, K * scales
        return self.score(X, K, power=self.power, eps=self.eps)

    def weights(self, X: Tensor) -> Tensor:
        """Attention weights ``a(x)``, shape (n, m), rows summing to 1 (unless ``softmax=False``)."""
        scores = self.scores(X)
        return torch.softmax(scores, dim=1) if self.softmax else scores

    def forward(self, X: Tensor) -> Tensor:
        """Class logits ``Σ_i a_i(x) v_i``, shape (n, n_classes)."""
        return self.weights(X) @ self.values
