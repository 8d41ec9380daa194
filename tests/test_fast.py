"""The CPU speed variant for Shepard weights (protoattn._fast) against the one definition of the model,
softmax(idw(x, K)) @ V in torch (protoattn._network): predictions, gradients and Adam's updates."""

import numpy as np
import pytest
import torch

from protoattn import _fast, _training
from protoattn._network import PrototypeAttention
from protoattn.attention import idw


def _network(power, eps, metric, dtype=torch.float64, seed=0, d=6, m=9, classes=4):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(m, d, generator=g, dtype=dtype)
    values = torch.randn(m, classes, generator=g, dtype=dtype)
    log_scales = None if metric is None else 0.3 * torch.randn(d, generator=g, dtype=dtype)
    return PrototypeAttention(keys, values, idw, power, eps, True, log_scales, metric == "learned")


def _queries(network, n=50, seed=1):
    """Rows around the keys, with exact hits, far rows and rows close to each other."""
    g = torch.Generator().manual_seed(seed)
    keys = network.keys.detach()
    X = torch.randn(n, keys.shape[1], generator=g, dtype=keys.dtype)
    X[0], X[1] = keys[3], keys[0]  # exact hits
    X[2] = 1e3 * X[2]  # far from every key
    X[3] = keys[5] + 1e-4  # nearly a hit
    return X


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", [None, "fixed"])
@pytest.mark.parametrize("eps", [1e-3, 0.5])
@pytest.mark.parametrize("power", [1.0, 2.0, 3.0, 7.3, 10.0, 20.0, 64.0, 128.0])
def test_fast_logits_are_the_networks(power, eps, metric, dtype):
    network = _network(power, eps, metric, dtype)
    X = _queries(network)
    predict = _fast.predictor(network)
    assert predict is not None
    with torch.no_grad():
        expected = network(X).numpy()
    rtol, atol = (2e-4, 1e-5) if dtype == torch.float32 else (1e-9, 1e-12)
    rows = slice(None)
    if power < 2:
        # A hit's distance is a difference of nearly equal numbers, rounded differently by the two;
        # d^p with p < 2 magnifies that rounding near 0.
        rows = slice(4, None)
    np.testing.assert_allclose(predict(X.numpy())[rows], expected[rows], rtol=rtol, atol=atol)


def test_fast_path_is_for_shepard_weights_on_the_cpu_only():
    assert _fast.predictor(_network(2.0, 0.0, None)) is None  # eps = 0: a hit is a singularity
    network = _network(2.0, 1e-3, None)
    network.softmax = False
    assert _fast.predictor(network) is None


@pytest.mark.parametrize("metric", [None, "fixed", "learned"])
@pytest.mark.parametrize("eps", [1e-3, 0.5])
@pytest.mark.parametrize("power", [1.5, 2.0, 7.0, 20.0])
def test_written_out_gradients_are_autograds(power, eps, metric):
    """Loss and gradients of the training step against autograd through softmax of the log-space score,
    for weighted cross-entropy, with or without a (learned) diagonal metric, with exact hits."""
    network = _network(power, eps, metric)
    X = _queries(network)
    g = torch.Generator().manual_seed(2)
    y, w = torch.randint(0, 4, (len(X),), generator=g), torch.rand(len(X), generator=g, dtype=torch.float64)
    expected = torch.dot(torch.nn.functional.cross_entropy(network(X), y, reduction="none"), w)
    expected_grads = torch.autograd.grad(expected / len(X), list(network.parameters()))
    keys, values = network.keys.detach().numpy(), network.values.detach().numpy()
    log_scales = None if metric is None else network.log_scales.detach().numpy()
    loss, grads = _fast.loss_and_grads(
        X.numpy(), y.numpy(), w.numpy(), keys, values, log_scales, metric == "learned", power, eps
    )
    assert len(grads) == len(expected_grads) == (3 if metric == "learned" else 2)
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-10)
    for mine, theirs in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-7, atol=1e-10)


def test_gradients_stay_right_when_logits_need_shifting():
    network = _network(4.0, 1e-3, None)
    with torch.no_grad():
        network.values *= 1e3  # logits beyond ±354, where exp overflows float64 unshifted
    X = _queries(network)
    y, w = torch.zeros(len(X), dtype=torch.long), torch.ones(len(X), dtype=torch.float64)
    expected = torch.dot(torch.nn.functional.cross_entropy(network(X), y, reduction="none"), w)
    grads = torch.autograd.grad(expected / len(X), list(network.parameters()))
    arrays = [t.detach().numpy() for t in (X, y, w, network.keys, network.values)]
    loss, mine = _fast.loss_and_grads(*arrays, None, False, 4.0, 1e-3)
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-10)
    for a, b in zip(mine, grads, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-7, atol=1e-9)


def test_a_rate_per_entry_steps_alike_in_both_training_steps():
    """The metric's scales with a rate each (categorical features learn faster): the written-out step
    (rates entry by entry) and the autograd step (torch's Adam at the largest rate, each entry's step
    scaled back) follow the same trajectory, and an entry's step scales with its rate."""
    ours, theirs = _network(6.0, 1e-3, "learned"), _network(6.0, 1e-3, "learned")
    start = ours.log_scales.detach().clone()
    X = _queries(ours)
    g = torch.Generator().manual_seed(3)
    y, w = torch.randint(0, 4, (len(X),), generator=g), torch.rand(len(X), generator=g, dtype=torch.float64)
    metric = np.array([0.01, 0.1, 0.01, 0.1, 0.1, 0.01])
    rates, total = [0.3, 0.1, metric], 10
    step = _fast.TrainingStep(ours, rates, total)
    reference = _training.AutogradStep(theirs, rates, total)
    for _ in range(total):
        loss = step(X.numpy(), y.numpy(), w.numpy())
        assert loss == pytest.approx(reference(X, y, w), rel=1e-8)
    for mine, other in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(mine.detach().numpy(), other.detach().numpy(), rtol=1e-8, atol=1e-10)
    # Adam's first step is the rate itself (to its eps), in the direction of the gradient's sign.
    single = _network(6.0, 1e-3, "learned")
    _fast.TrainingStep(single, rates, total)(X.numpy(), y.numpy(), w.numpy())
    np.testing.assert_allclose(np.abs(single.log_scales.detach().numpy() - start.numpy()), metric, rtol=1e-4)


@pytest.mark.parametrize("anneal", [True, False])
def test_training_step_is_torch_adam_on_autograds_gradients(anneal):
    """Ten steps of the written-out step against torch.optim.Adam (one rate per parameter, the cosine
    schedule as a LambdaLR) on autograd through the definition: the same parameters."""
    ours, theirs = _network(6.0, 1e-3, "learned"), _network(6.0, 1e-3, "learned")
    X = _queries(ours)
    g = torch.Generator().manual_seed(3)
    y, w = torch.randint(0, 4, (len(X),), generator=g), torch.rand(len(X), generator=g, dtype=torch.float64)
    rates, total = [0.3, 0.1, 0.01], 10
    step = _fast.TrainingStep(ours, rates, total, anneal)
    optimizer = torch.optim.Adam([{"params": [p], "lr": r} for p, r in zip(theirs.parameters(), rates, strict=True)])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: 0.5 * (1 + np.cos(np.pi * k / total)) if anneal else 1.0
    )
    for _ in range(total):
        loss = step(X.numpy(), y.numpy(), w.numpy())
        optimizer.zero_grad()
        expected = torch.dot(torch.nn.functional.cross_entropy(theirs(X), y, reduction="none"), w)
        (expected / len(X)).backward()
        optimizer.step()
        schedule.step()
        assert loss == pytest.approx(expected.item(), rel=1e-8)
    for mine, reference in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(mine.detach().numpy(), reference.detach().numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("metric", [None, "learned"])
@pytest.mark.parametrize("power", [1.5, 2.0, 7.0, 20.0])
def test_dropped_weights_have_autograds_gradients(power, metric):
    """Attention dropout: row n's weight on prototype i dropped where keep[i, n] is False and the rest
    renormalised, in the written-out loss and gradients as through the definition; also where the
    dropped prototype is the row's exact hit (the others' ratios are then taken to the nearest kept
    distance, not the hit's) and where a single prototype is kept."""
    network = _network(power, 1e-3, metric)
    X = _queries(network)
    keep = _training.keep_mask(len(network.keys), len(X), 0.5, torch.Generator().manual_seed(4))
    keep[3, 0] = False  # row 0 is key 3's hit
    keep[:, 1] = False
    keep[5, 1] = True  # row 1 is key 0's hit and keeps only key 5
    g = torch.Generator().manual_seed(2)
    y, w = torch.randint(0, 4, (len(X),), generator=g), torch.rand(len(X), generator=g, dtype=torch.float64)
    expected = torch.dot(torch.nn.functional.cross_entropy(network(X, keep.T), y, reduction="none"), w)
    expected_grads = torch.autograd.grad(expected / len(X), list(network.parameters()))
    keys, values = network.keys.detach().numpy(), network.values.detach().numpy()
    log_scales = None if metric is None else network.log_scales.detach().numpy()
    loss, grads = _fast.loss_and_grads(
        X.numpy(), y.numpy(), w.numpy(), keys, values, log_scales, metric == "learned", power, 1e-3, None, keep.numpy()
    )
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-10)
    for mine, theirs in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-7, atol=1e-10)
    with torch.no_grad():
        weights = network.weights(X, keep.T)
    assert (weights[~keep.T] == 0).all() and weights[1, 5] == 1.0
    np.testing.assert_allclose(weights.sum(1).numpy(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("q", [1, 2, 3, 5, 10, 16, 32, 63, 64, 2.5])
def test_power_by_squaring_is_numpys_power(q):
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=50)
    np.testing.assert_allclose(_fast.power_(x.copy(), q), x**q, rtol=1e-12)


@pytest.mark.parametrize("standardised", [False, True])
@pytest.mark.parametrize("metric", [None, "fixed"])
@pytest.mark.parametrize("power", [2.0, 7.3, 10.0])
def test_fast_logits_honour_the_reach(power, metric, standardised):
    """A prototype of finite reach has weight exactly 0 beyond it, in the speed variant as in the network."""
    base = _network(power, 1e-3, metric)
    g = torch.Generator().manual_seed(2)
    m, d = base.keys.shape
    offset, scale = (torch.randn(d, generator=g, dtype=torch.float64), torch.rand(d, generator=g) + 0.5)
    reach = torch.full((m,), torch.inf, dtype=torch.float64)
    reach[[2, 5, 7]] = torch.tensor([0.5, 2.0, 3.5], dtype=torch.float64)
    kwargs = {"offset": offset, "scale": scale.double()} if standardised else {}
    network = PrototypeAttention(
        base.keys.detach(), base.values.detach(), idw, power, 1e-3, True, base.log_scales, reach=reach, **kwargs
    )
    X = _queries(network, n=200)
    predict = _fast.predictor(network)
    with torch.no_grad():
        expected = network(X).numpy()
        d2 = torch.cdist(*network.scaled(X)).square().numpy()
        weights = network.weights(X).numpy()
    outside = d2 > reach.square().numpy()
    assert outside[:, [2, 5, 7]].any() and (~outside[:, [2, 5, 7]]).any()  # both sides are tested
    assert np.all(weights[outside] == 0.0)
    # Rows too close to a boundary for the two roundings to agree are left out.
    clear = np.all(np.abs(d2 - reach.square().numpy()) > 1e-9 * (1 + d2), axis=1)
    np.testing.assert_allclose(predict(X.numpy())[clear], expected[clear], rtol=1e-9, atol=1e-12)


def test_reach_none_computes_as_before():
    network = _network(2.0, 1e-3, "fixed")
    unbounded = PrototypeAttention(
        network.keys.detach(),
        network.values.detach(),
        idw,
        2.0,
        1e-3,
        True,
        network.log_scales,
        reach=torch.full((9,), torch.inf, dtype=torch.float64),
    )
    X = _queries(network)
    with torch.no_grad():
        np.testing.assert_array_equal(unbounded(X).numpy(), network(X).numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("power", [2.0, 7.3, 10.0])
def test_fast_logits_put_columns_on_their_logarithmic_scale(power, dtype):
    """Columns of a positive log unit are compared as asinh(x / u), in the speed variant as in the network."""
    base = _network(power, 1e-3, "fixed", dtype=dtype)
    m, d = base.keys.shape
    units = torch.zeros(d, dtype=dtype)
    units[[1, 4]] = torch.tensor([0.5, 3.0], dtype=dtype)
    keys = base.keys.detach().clone()
    keys[:, [1, 4]] = keys[:, [1, 4]].abs() * 20  # amounts, as such columns hold
    offset, scale = torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)
    network = PrototypeAttention(
        keys, base.values.detach(), idw, power, 1e-3, True, base.log_scales, offset=offset, scale=scale, log_units=units
    )
    X = _queries(network, n=200)
    X[5:, [1, 4]] = X[5:, [1, 4]].abs() * 50  # far apart in amount, near on the logarithmic scale
    with torch.no_grad():
        expected = network(X).numpy()
        logged = network.logged(keys).detach()
        plain = PrototypeAttention(
            logged, base.values.detach(), idw, power, 1e-3, True, base.log_scales, offset=offset, scale=scale
        )(network.logged(X)).numpy()
    np.testing.assert_allclose(expected, plain, rtol=1e-12)  # the network: asinh(x / u), then as before
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    np.testing.assert_allclose(_fast.predictor(network)(X.numpy()), expected, rtol=tolerance, atol=tolerance)
