"""The attention network, the one definition of the model: ``logits(x) = softmax(score(x, K)) @ V``.

Fit, predict, explain, patching and export all compute through :class:`PrototypeAttention`; the only
other implementation is the CPU speed variant for Shepard weights in :mod:`protoattn._fast`, tested
equal to this one. No scikit-learn here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import idw, scale_features, squared_distances


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
    log_scales : Tensor of shape (n_features,), optional
        A diagonal metric, one scale per feature: the score sees ``s ∘ z`` for inputs and keys with
        ``s = exp(log_scales)``, so distances are ``‖s ∘ (z_x - z_k)‖`` (relevance learning, Hammer
        and Villmann 2002).
    learn_scales : bool, default=False
        Whether ``log_scales`` is a trained parameter (else a constant buffer).
    column_features : Tensor of shape (d,), optional
        The feature of each input column (a categorical feature's one-hot block shares its scale);
        None: one column per feature.
    offset, scale : Tensor of shape (d,), optional
        Standardisation: the score sees ``z = (x - offset) / scale`` for inputs and keys alike, so
        keys are in the inputs' units. None: inputs are already standardised.
    log_units : Tensor of shape (d,), optional
        Columns compared on a logarithmic scale: where ``u > 0``, ``x`` becomes ``asinh(x / u)``
        before the standardisation, for inputs and keys alike (heavy-tailed amounts, see
        :func:`protoattn._tables.log_units`). None: every column as it is.
    reach : Tensor of shape (m,), optional
        Each prototype's reach in the model's distance (the metric on standardised inputs, what
        :meth:`scaled` gives to :func:`~protoattn.attention.squared_distances`): beyond it the
        prototype's score is ``-inf`` and its weight exactly 0 (``inf``: everywhere). None: every
        reach is infinite, and nothing is masked (the network computes as it did before reaches).
        At least one prototype must have an infinite reach, so that every row has a weight.
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
        column_features: Tensor | None = None,
        offset: Tensor | None = None,
        scale: Tensor | None = None,
        reach: Tensor | None = None,
        log_units: Tensor | None = None,
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
        self.register_buffer("column_features", column_features)
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)
        self.register_buffer("log_units", log_units)
        self.register_buffer("reach", reach)
        self.score = score
        self.power = power
        self.eps = eps
        self.softmax = softmax

    @property
    def shepard(self) -> bool:
        """Whether the weights are Shepard's (``idw`` under softmax with ``eps > 0``), which
        :mod:`protoattn._fast` computes faster on the CPU."""
        return self.softmax and self.eps > 0 and self.score is idw

    def scaled(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs and keys as the score sees them: standardised, then multiplied by the metric."""
        K = self.keys
        if self.log_units is not None:
            X, K = self.logged(X), self.logged(K)
        if self.offset is not None:
            X, K = (X - self.offset) / self.scale, (K - self.offset) / self.scale
        if self.log_scales is not None:
            scales = self.column_scales()
            X, K = scale_features(X, scales), K * scales
        return X, K

    def logged(self, X: Tensor) -> Tensor:
        """``asinh(x / u)`` in the columns of a positive ``log_units`` entry u, x elsewhere."""
        logged = self.log_units > 0
        z = X / torch.where(logged, self.log_units, 1.0)
        # asinh(z) written out: onnxruntime has no float64 Asinh kernel, and exported models must run.
        return torch.where(logged, z.sign() * torch.log(z.abs() + torch.sqrt(z * z + 1.0)), X)

    def column_scales(self) -> Tensor:
        """The metric's scale of each input column."""
        scales = self.log_scales.exp()
        return scales if self.column_features is None else scales[self.column_features]

    def scores(self, X: Tensor) -> Tensor:
        """Attention scores, shape (n, m)."""
        return self.score(*self.scaled(X), power=self.power, eps=self.eps)

    def weights(self, X: Tensor, keep: Tensor | None = None) -> Tensor:
        """Attention weights ``a(x)``, shape (n, m), rows summing to 1 (unless ``softmax=False``); a
        prototype's weight is exactly 0 beyond its ``reach``, and where ``keep`` (boolean, (n, m);
        training's attention dropout, with softmax) is False, unless that would leave a row no weight."""
        scores = self.scores(X)
        if self.reach is not None:  # a structural branch, not on the data: ONNX export traces the mask
            outside = squared_distances(*self.scaled(X)) > self.reach.square()
            scores = scores.masked_fill(outside, -torch.inf if self.softmax else 0.0)
        if keep is not None:
            dropped = scores.masked_fill(~keep, -torch.inf)
            scores = torch.where(dropped.isneginf().all(1, keepdim=True), scores, dropped)
        return torch.softmax(scores, dim=1) if self.softmax else scores

    def forward(self, X: Tensor, keep: Tensor | None = None) -> Tensor:
        """Class logits ``Σ_i a_i(x) v_i``, shape (n, n_classes)."""
        return self.weights(X, keep) @ self.values

    def feature_terms(self, X: Tensor, prototypes: Tensor) -> Tensor:
        """Each feature's term of the squared distance between each sample and some prototypes,
        ``(d / d_observed) Σ_{j ∈ f} s_f² (z_xj - z_kj)²``, of shape (n, k, n_features) for
        ``prototypes`` of shape (n, k) (indices): they sum to :func:`~protoattn.attention.squared_distances`
        on the scaled inputs, and a missing feature's term is 0."""
        Xs, Ks = self.scaled(X)
        observed = ~Xs.isnan()
        terms = (Xs[:, None, :] - Ks[prototypes]).square().nan_to_num(nan=0.0)
        terms *= (Xs.shape[1] / observed.sum(1).clamp(min=1))[:, None, None]
        columns = self.column_features if self.column_features is not None else torch.arange(Xs.shape[1])
        n_features = int(columns.max()) + 1 if len(columns) else 0
        out = torch.zeros((*terms.shape[:2], n_features), dtype=terms.dtype, device=terms.device)
        return out.index_add_(2, columns.to(terms.device), terms)
