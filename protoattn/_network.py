"""The attention network: ``logits(x) = softmax(score(x, K)) @ V``. No scikit-learn here."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from . import _shepard
from ._compute import matmul
from .attention import SOFTMAX_CLOSED_FORMS, ScoreFunction, idw_weights


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
    log_scales : Tensor of shape (d,), optional
        A diagonal metric: the score sees ``x * s`` and ``k * s`` with ``s = exp(log_scales)``, so
        distances are ``‖s ∘ (x - k)‖``. Learned when ``learn_scales``, else fixed.
    learn_scales : bool, default=False
        Whether ``log_scales`` is a parameter (trained, after the keys and values) or a constant.
    """

    def __init__(
        self,
        keys: Tensor,
        values: Tensor,
        score: ScoreFunction,
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

    def _scaled(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """X and the keys in the metric's coordinates."""
        if self.log_scales is None:
            return X, self.keys
        scales = self.log_scales.exp()
        return X * scales, self.keys * scales

    def scores(self, X: Tensor) -> Tensor:
        return self.score(*self._scaled(X), power=self.power, eps=self.eps)

    @property
    def shepard(self) -> bool:
        """Whether the weights are Shepard's in closed form (``idw`` under softmax, ``eps > 0``): the
        network then has a written-out forward and backward (:meth:`loss_and_grads`)."""
        return self.softmax and self.eps > 0 and SOFTMAX_CLOSED_FORMS.get(self.score) is idw_weights

    def weights(self, X: Tensor) -> Tensor:
        """Attention weights ``a(x)``, shape (n, m), rows summing to 1 (unless ``softmax=False``)."""
        if self.shepard and not self._recorded(X):
            r = self._shepard_ratios(X)
            return r.div_(r.sum(1, keepdim=True))
        closed_form = SOFTMAX_CLOSED_FORMS.get(self.score) if self.softmax else None
        if closed_form is not None:
            return closed_form(*self._scaled(X), power=self.power, eps=self.eps)
        scores = self.scores(X)
        return torch.softmax(scores, dim=1) if self.softmax else scores

    def forward(self, X: Tensor) -> Tensor:
        """Class logits ``Σ_i a_i(x) v_i``, shape (n, n_classes)."""
        if self._recorded(X):
            # For autograd, as (valuesᵀ weightsᵀ)ᵀ: MKL is several times faster with the long
            # dimension last when there are few classes.
            return (self.values.T @ self.weights(X).T).T
        if self.shepard:
            # Normalised after the product, by row sums from the same product (the values with a
            # column of ones): a pass over the (n, n_classes) result, none over (n, m).
            r = self._shepard_ratios(X)
            sums = matmul(r, _shepard.TorchOps.with_ones_column(self.values))
            return sums[:, :-1] / sums[:, -1:]
        return matmul(self.weights(X), self.values)

    def _recorded(self, X: Tensor) -> bool:
        """Whether autograd records this call."""
        return torch.is_grad_enabled() and (X.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _shepard_ratios(self, X: Tensor) -> Tensor:
        """Shepard's unnormalised weights with no graph; the metric multiplies the keys, not X (one
        formula for predictions and explanations alike: at an exact hit with p < 2 the weights
        depend on the rounding of a zero distance)."""
        sq_scales = None if self.log_scales is None else (2.0 * self.log_scales).exp()
        return _shepard.ratios(X, self.keys, self.power, self.eps, sq_scales=sq_scales)[0]

    def loss_and_grads(self, X, y, w) -> tuple:
        """``Σ_i w_i CE(logits(x_i), y_i)`` and the gradients of its mean over the rows with respect to
        :meth:`parameters`, in their order, as tensors; or, given numpy arrays (a network on the CPU),
        as numpy arrays.

        For Shepard weights (:attr:`shepard`) both passes are written out: the gradients autograd gives,
        with no graph and every product through BLAS, at a third of the time of a training step
        (on the CPU in numpy, see :mod:`protoattn._shepard`).
        """
        on_numpy = isinstance(X, np.ndarray)
        if not self.shepard:
            X, y, w = (torch.as_tensor(a) for a in (X, y, w))
            weighted = torch.dot(nn.functional.cross_entropy(self(X), y, reduction="none"), w)
            grads = torch.autograd.grad(weighted / len(X), list(self.parameters()))
            if on_numpy:
                return weighted.item(), [g.numpy() for g in grads]
            return weighted.detach(), list(grads)
        if on_numpy:
            with np.errstate(all="ignore"):  # like torch: NaN and infinity propagate without a warning
                return self.training_step()(X, y, w)
        learn_scales = self.log_scales is not None and self.log_scales.requires_grad
        params = self.keys, self.values, self.log_scales
        with torch.no_grad():
            return _shepard.loss_and_grads(X, y, w, *params, learn_scales, self.power, self.eps)

    def training_step(self):
        """:meth:`loss_and_grads` as a function of ``(X, y, w)`` for training's loop: for a Shepard
        network on the CPU, on numpy arrays, with numpy views of the parameters taken once (a step is
        short enough that converting them each time would show); otherwise the method itself."""
        if not (self.shepard and self.keys.device.type == "cpu"):
            return self.loss_and_grads
        learn_scales = self.log_scales is not None and self.log_scales.requires_grad
        params = [None if p is None else p.detach().numpy() for p in (self.keys, self.values, self.log_scales)]

        def step(X, y, w):
            return _shepard.loss_and_grads(X, y, w, *params, learn_scales, self.power, self.eps)

        return step
