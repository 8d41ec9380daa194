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

    Attributes
    ----------
    distance_scale : float or None
        For prediction with Shepard weights (:attr:`shepard`): a squared distance typical of a
        query's nearest prototype (see :meth:`typical_distance`). When set, a forward with no graph
        computes every row at this one scale and recomputes only the rows that need their own,
        which saves three passes over the (n, m) matrix. None (the default): each row at its own.
        What this needs from the parameters is computed at first use: set it again after changing them.
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
        self.distance_scale = None

    @property
    def distance_scale(self) -> float | None:
        return self._distance_scale

    @distance_scale.setter
    def distance_scale(self, scale: float | None):
        self._distance_scale = scale
        self._at_scale = {}  # what it needs from the parameters, by number of columns of the product

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
            r, sums = self._shepard_ratios(X, self.values[:, :0])  # no columns: just the row sums
            return r.div_(sums)
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
            sums = self._shepard_ratios(X, self.values)[1]
            return sums[:, :-1] / sums[:, -1:]
        return matmul(self.weights(X), self.values)

    def _recorded(self, X: Tensor) -> bool:
        """Whether autograd records this call."""
        return torch.is_grad_enabled() and (X.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _shepard_ratios(self, X: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        """Shepard's unnormalised weights r with no graph, and ``r @ [right, 1]`` (its last column:
        the row sums). The metric multiplies the keys, not X: one formula for predictions and
        explanations alike (at an exact hit with p < 2 the weights depend on the rounding of a
        zero distance).

        With :attr:`distance_scale` set, every row is first computed at that one scale
        (:class:`protoattn._shepard.AtScale`), and the rows whose sums say they may have overflowed
        or underflowed are computed again, each at its own nearest distance.
        """
        if self.distance_scale is None:
            r = self._own_scale_ratios(X)
            return r, matmul(r, _shepard.TorchOps.with_ones_column(right))
        at_scale = self._at_scale.get(right.shape[1])
        if at_scale is None:  # once per call of the classifier: the same for every chunk
            at_scale = _shepard.AtScale(self.keys, self._sq_scales(), self.power, self.eps, self.distance_scale, right)
            self._at_scale[right.shape[1]] = at_scale
        r, product = at_scale(X)
        rows = at_scale.untrusted(product)
        if rows is not None:
            r_rows = self._own_scale_ratios(X[rows])
            r[rows] = r_rows
            product[rows] = at_scale.product(r_rows)
        return r, product

    def _sq_scales(self) -> Tensor | None:
        return None if self.log_scales is None else (2.0 * self.log_scales).exp()

    def _own_scale_ratios(self, X: Tensor) -> Tensor:
        """Shepard's unnormalised weights with each row at its own nearest distance."""
        return _shepard.ratios(X, self.keys, self.power, self.eps, sq_scales=self._sq_scales())[0]

    def typical_distance(self) -> float | None:
        """A squared distance typical of a query's nearest prototype, for :attr:`distance_scale`: the
        median, over up to 64 evenly spaced prototypes, of the squared distance (in the metric) to
        their nearest distinct prototype. On the benchmark data sets it is within a factor 4 of the
        median over held-out rows of the squared distance to their nearest prototype. None when
        there are no two distinct prototypes."""
        keys = self.keys.detach().double()
        if self.log_scales is not None:
            keys = keys * self.log_scales.detach().double().exp()
        sample = torch.linspace(0, len(keys) - 1, min(len(keys), 64), device=keys.device).long()
        norms = _shepard.TorchOps.squared_norms(keys)
        sample_norms = norms[sample][:, None]
        d2 = (keys[sample] @ keys.T).mul_(-2.0).add_(norms).add_(sample_norms)
        # Pairs closer than rounding (float64, so within 1e-12 of their norms) are the same prototype.
        d2[d2 <= 1e-12 * (norms + sample_norms)] = torch.inf
        nearest = d2.amin(1)
        nearest = nearest[nearest.isfinite()]
        return float(nearest.median()) if len(nearest) else None

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
