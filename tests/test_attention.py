"""Each attention score against a direct numpy formula, and the log-space IDW at its extremes."""

import numpy as np
import pytest
import torch

from protoattn.attention import ATTENTIONS, SOFTMAX_FREE, ImplicitKernel, idw, relu, squared_distances

rng = np.random.default_rng(0)
X = rng.normal(size=(7, 5))
K = rng.normal(size=(4, 5))
P, EPS = 3.0, 1e-2
DIST = np.linalg.norm(X[:, None] - K[None], axis=-1)
DOT = X @ K.T
REFERENCE = {
    "idw": -np.log(EPS + DIST**P),
    "inv_dist": 1 / (EPS + DIST**P),
    "neg_dist": -(DIST**P),
    "gaussian": np.exp(-0.5 * DIST**P),
    "dot": DOT / np.sqrt(5),
    "cosine": DOT / np.outer(np.linalg.norm(X, axis=1), np.linalg.norm(K, axis=1)),
    "expressive": DOT**2 / 5,
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_score_matches_formula(name):
    scores = ATTENTIONS[name](torch.as_tensor(X), torch.as_tensor(K), power=P, eps=EPS)
    np.testing.assert_allclose(scores.numpy(), REFERENCE[name], rtol=1e-10, atol=1e-12)


def test_registry_covers_the_papers_comparison_set():
    assert set(REFERENCE) | {"kernel", "relu"} == set(ATTENTIONS)


def test_squared_distances_are_never_negative():
    Z = torch.as_tensor(rng.normal(size=(50, 3)) * 1e3, dtype=torch.float32)
    d2 = squared_distances(Z, Z)
    assert (d2 >= 0).all()
    np.testing.assert_allclose(torch.diagonal(d2).numpy(), 0, atol=1.0)  # 1e6-sized norms, float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_idw_is_finite_at_huge_power_and_distance(dtype):
    x = torch.zeros((1, 2), dtype=dtype)
    keys = torch.tensor([[100.0, 0.0], [0.0, 50.0]], dtype=dtype)
    scores = idw(x, keys, power=400.0, eps=1e-3)
    assert torch.isfinite(scores).all()
    expected = -(400 / 2) * np.log([100.0**2, 50.0**2])  # log(eps + d^p) ≈ p log d here
    np.testing.assert_allclose(scores.numpy()[0], expected, rtol=1e-6)
    weights = torch.softmax(scores, 1)
    assert weights[0, 1] == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_hit_gets_weight_one_over_eps(dtype):
    x = torch.tensor([[1.0, 2.0]], dtype=dtype)
    keys = torch.tensor([[1.0, 2.0], [3.0, 2.0]], dtype=dtype, requires_grad=True)
    scores = idw(x, keys, power=2.0, eps=1e-3)
    assert scores[0, 0].item() == pytest.approx(-np.log(1e-3), rel=1e-6)  # exp(score) = 1/eps
    weights = torch.softmax(scores, 1)
    assert weights[0, 0].item() == pytest.approx((1 / 1e-3) / (1 / 1e-3 + 1 / (1e-3 + 4.0)), rel=1e-5)
    scores.sum().backward()
    assert torch.isfinite(keys.grad).all()


@pytest.mark.parametrize("power", [2.0, 6.0, 16.0, 7.0])
def test_hits_far_from_the_origin_keep_weights_in_zero_one(power):
    # In float32 ‖x‖² - 2 x·k + ‖k‖² misses 0 at a hit by about 1e-7 (‖x‖² + ‖k‖²): an odd power of a
    # slightly negative distance once gave negative or infinite weights.
    keys = torch.as_tensor(np.random.default_rng(0).normal(scale=10.0, size=(50, 100)), dtype=torch.float32)
    for grad in (False, True):
        k = keys.clone().requires_grad_(grad)
        weights = torch.softmax(idw(keys[:20], k, power=power, eps=1e-3), 1)
        assert torch.isfinite(weights).all() and (weights >= 0).all() and (weights <= 1).all()
        np.testing.assert_allclose(torch.diagonal(weights).detach().numpy(), 1.0, atol=1e-4)


def test_idw_with_eps_zero_stays_finite_on_a_hit():
    x = torch.zeros((1, 3))
    scores = idw(x, torch.zeros((2, 3)), power=2.0, eps=0.0)
    assert torch.isfinite(scores).all()


def test_implicit_kernel_with_the_rbf_bandwidth_gives_dot_product_weights():
    # Song et al.: exp(x·k/√d) = RBF(x, k; bandwidth √√d) · exp(‖x‖²/2√d) · exp(‖k‖²/2√d).
    d = X.shape[1]
    kernel = ImplicitKernel(d, n_components=1).double()
    with torch.no_grad():
        kernel.log_scales.fill_(-0.25 * np.log(d))
    Xt, Kt = torch.as_tensor(X), torch.as_tensor(K)
    np.testing.assert_allclose(
        torch.softmax(kernel(Xt, Kt, power=2.0), 1).detach().numpy(),
        torch.softmax(ATTENTIONS["dot"](Xt, Kt), 1).numpy(),
        rtol=1e-10,
    )


def test_implicit_kernel_starts_near_dot_product_weights_even_beside_a_key_of_large_norm():
    """Standardised near-constant columns give some keys huge norms (digits: ‖k‖² up to 2 575 against
    a median of about 60). A component wider than the dot product's bandwidth would let such a key take
    every row's weight, with no gradient left to learn from; the mixture starts at dot's weights."""
    rng = np.random.default_rng(0)
    X_, K_ = rng.standard_normal((50, 64)), rng.standard_normal((10, 64))
    K_[3, :4] = 25.0  # ‖k‖² about 2 500
    Xt, Kt = torch.as_tensor(X_), torch.as_tensor(K_)
    kernel = ImplicitKernel(64).double()
    weights = torch.softmax(kernel(Xt, Kt, power=2.0), 1).detach().numpy()
    dot = torch.softmax(ATTENTIONS["dot"](Xt, Kt), 1).numpy()
    np.testing.assert_allclose(weights, dot, atol=1e-3)
    assert (weights.argmax(1) == 3).mean() < 0.5  # as with dot: the rows it points at, not all of them


def test_implicit_kernel_attention_learns_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from protoattn import IDWAttentionClassifier

    X_, y_ = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X_, y_, random_state=0, stratify=y_)
    clf = IDWAttentionClassifier(attention="kernel", dropout=0.0, max_epochs=30, random_state=0)
    assert clf.fit(X_train, y_train).score(X_test, y_test) > 0.9  # was 0.10: every row on one prototype


def test_implicit_kernel_is_a_positive_mixture_with_an_lp_magnitude():
    kernel = ImplicitKernel(X.shape[1]).double()
    Xt, Kt = torch.as_tensor(X), torch.as_tensor(K)
    scales = kernel.log_scales.exp().detach().numpy()
    mixture = np.full(len(scales), 1 / len(scales))  # equal weights at initialisation
    rbf = [np.exp(-0.5 * (((X[:, None] - K[None]) * s) ** 2).sum(-1)) for s in scales]
    magnitude = (np.abs(K) ** 3).sum(1) ** (2 / 3)
    expected = np.log(np.tensordot(mixture, rbf, axes=1)) + magnitude / (2 * np.sqrt(X.shape[1]))
    np.testing.assert_allclose(kernel(Xt, Kt, power=3.0).detach().numpy(), expected, rtol=1e-10)
    assert len({float(s[0]) for s in scales}) == len(scales)  # distinct bandwidths, so they can specialise


def test_relu_is_the_fully_connected_baseline():
    scores = relu(torch.as_tensor(X), torch.as_tensor(K))
    np.testing.assert_allclose(scores.numpy(), np.maximum(DOT, 0))
    assert "relu" in SOFTMAX_FREE


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_idw_softmax_stays_finite_on_hits_and_at_huge_power(dtype):
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=dtype)
    keys = torch.tensor([[1.0, 2.0], [3.0, 2.0], [300.0, 0.0]], dtype=dtype, requires_grad=True)
    for power in [2.0, 16.0, 400.0]:
        weights = torch.softmax(idw(x, keys, power=power, eps=1e-3), 1)
        assert torch.isfinite(weights).all()
        np.testing.assert_allclose(weights.sum(1).detach().numpy(), 1.0, rtol=1e-6)
        assert weights[0, 0].item() == pytest.approx(1.0, abs=1e-3)  # the exact hit takes (almost) all
        (grad,) = torch.autograd.grad(weights[:, 1].sum(), keys)
        assert torch.isfinite(grad).all()
