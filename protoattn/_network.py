"""The attention network: ``logits(x) = softmax(score(x, K)) @ V``. No scikit-learn here."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._compute import matmul
from .attention import (
    SOFTMAX_CLOSED_FORMS,
    ScoreFunction,
    _shepard_distance_grad,
    _shepard_ratios,
    idw_weights,
)


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
        closed_form = SOFTMAX_CLOSED_FORMS.get(self.score) if self.softmax else None
        if closed_form is not None:
            return closed_form(*self._scaled(X), power=self.power, eps=self.eps)
        scores = self.scores(X)
        return torch.softmax(scores, dim=1) if self.softmax else scores

    def forward(self, X: Tensor) -> Tensor:
        """Class logits ``Σ_i a_i(x) v_i``, shape (n, n_classes)."""
        if torch.is_grad_enabled() and (X.requires_grad or any(p.requires_grad for p in self.parameters())):
            # For autograd, as (valuesᵀ weightsᵀ)ᵀ: MKL is several times faster with the long
            # dimension last when there are few classes.
            return (self.values.T @ self.weights(X).T).T
        if self.shepard:
            # Normalised after the product: a pass over the (n, n_classes) result, not over (n, m).
            r, _ = _shepard_ratios(*self._scaled(X), self.power, self.eps)
            return matmul(r, self.values).div_(r.sum(1, keepdim=True))
        return matmul(self.weights(X), self.values)

    def loss_and_grads(self, X: Tensor, y: Tensor, w: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``Σ_i w_i CE(logits(x_i), y_i)`` and the gradients of its mean over the rows with respect to
        :meth:`parameters`, in their order.

        For Shepard weights (:attr:`shepard`) both passes are written out: the gradients autograd gives,
        with no graph and every product through BLAS, at a third of the time of a training step.
        """
        if not self.shepard:
            weighted = torch.dot(nn.functional.cross_entropy(self(X), y, reduction="none"), w)
            return weighted, list(torch.autograd.grad(weighted / len(X), list(self.parameters())))
        with torch.no_grad():
            values = self.values.detach()
            Xs, keys = self._scaled(X)
            r, sensitivity = _shepard_ratios(Xs, keys, self.power, self.eps, grad=True)
            weights = r.div_(r.sum(1, keepdim=True))
            logits = matmul(weights, values)
            log_p = torch.log_softmax(logits, dim=1)
            picked = log_p.gather(1, y[:, None])
            weighted = -torch.dot(picked.view(-1), w)
            # d/dlogits of the mean of w·CE: (softmax - one-hot) w / n.
            grad_logits = log_p.exp_().scatter_add_(1, y[:, None], picked.fill_(-1.0)).mul_((w / len(X))[:, None])
            grads = [None, matmul(weights.T, grad_logits)]
            # Σ_j a_j (dL/da_j) = Σ_c (dL/dlogit_c) logit_c: over the classes instead of the prototypes.
            mean = (grad_logits * logits).sum(1, keepdim=True)
            # dL/d‖xs - ks‖² (xs = x ∘ s, ks = k ∘ s), and through ‖xs‖² - 2 xs·ks + ‖ks‖² to the keys:
            # dL/dks_i = 2 Σ_n G_ni (ks_i - xs_n) = 2 ((Σ_n G_ni) ks_i - cross_i), with cross = Gᵀ xs.
            grad_d2 = _shepard_distance_grad(sensitivity.mul_(weights), matmul(grad_logits, values.T), mean)
            cross = matmul(grad_d2.T, Xs)
            column_sums = grad_d2.sum(0)[:, None]
            grad_ks = torch.addcmul(cross, keys, column_sums, value=-1.0).mul_(-2.0)
            if self.log_scales is None:
                grads[0] = grad_ks
                return weighted, grads
            grads[0] = grad_ks.mul_(self.log_scales.detach().exp())
            if self.log_scales.requires_grad:
                # dL/dlog s_j = Σ_n (dL/dxs_nj) xs_nj + Σ_i (dL/dks_ij) ks_ij
                #             = 2 [Σ_n (Σ_i G_ni) xs_nj² + Σ_i ks_ij ((Σ_n G_ni) ks_ij - 2 cross_ij)].
                rows = matmul(grad_d2.sum(1)[None], Xs.square()).view(-1)
                extra = (keys * torch.addcmul(cross, keys, column_sums, value=-0.5)).sum(0)
                grads.append(rows.add_(extra, alpha=-2.0).mul_(2.0))
        return weighted, grads
