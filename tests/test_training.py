"""The optimisation machinery: the written-out Adam and gradients, and the merging of duplicate rows."""

import numpy as np
import pytest
import torch

from protoattn import _shepard
from protoattn._network import PrototypeAttention
from protoattn._training import CosineAdam, aggregate_duplicates, power_schedule
from protoattn.attention import idw


def test_cosine_adam_is_torch_adam_under_a_cosine_schedule():
    torch.manual_seed(0)
    ours = [torch.randn(5, 3, dtype=torch.float64, requires_grad=True), torch.randn(4, dtype=torch.float64)]
    ours[1].requires_grad_()
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    reference = torch.optim.Adam([{"params": [theirs[0]], "lr": 0.3}, {"params": [theirs[1]]}], lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=20)
    optimizer = CosineAdam(ours, [0.3, 0.1], total_steps=20)

    def loss(a, b):
        return (a.sin().sum() * b.cos().sum()) ** 2

    for _ in range(20):
        optimizer.step(torch.autograd.grad(loss(*ours), ours))
        reference.zero_grad()
        loss(*theirs).backward()
        reference.step()
        schedule.step()
    for mine, torchs in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine.detach().numpy(), torchs.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_duplicates_merge_into_weights_the_same_whatever_the_order():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(300, 4)).astype(np.float64)
    X[::7, 0] = -0.0  # -0.0 and 0.0 are one value
    y = rng.integers(0, 2, size=300)
    weight = rng.integers(0, 3, size=300).astype(float)
    merged = aggregate_duplicates(X, y, weight)
    order = rng.permutation(300)
    again = aggregate_duplicates(X[order], y[order], weight[order])
    for a, b in zip(merged, again, strict=True):
        np.testing.assert_array_equal(a, b)
    rows, counts = np.unique(np.column_stack([X + 0.0, y])[weight > 0], axis=0, return_counts=True)
    assert len(merged[0]) == len(rows) and merged[2].sum() == weight.sum()
    assert (merged[2] > 0).all()


def test_power_schedule_anneals_through_even_powers():
    schedule = power_schedule(2.0, 20.0, 9)
    powers = [schedule(epoch) for epoch in range(12)]
    assert powers[0] == 2.0 and powers[9:] == [20.0] * 3
    assert all(p % 2 == 0 for p in powers) and powers == sorted(powers)
    assert power_schedule(2.0, 7.5, 4)(2) == 4.75  # not both even: linear


@pytest.mark.parametrize("metric", [None, "fixed", "learned"])
@pytest.mark.parametrize("power", [2.0, 7.0, 20.0])
def test_written_out_gradients_are_autograds(power, metric):
    """The default network's hand-written forward and backward give what autograd gives through softmax
    of the log-space IDW score, for weighted cross-entropy, with or without a (learned) diagonal metric."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 6, generator=g, dtype=torch.float64)
    keys = torch.randn(9, 6, generator=g, dtype=torch.float64)
    values = torch.randn(9, 4, generator=g, dtype=torch.float64)
    log_scales = None if metric is None else 0.3 * torch.randn(6, generator=g, dtype=torch.float64)
    X[0] = keys[3]  # an exact hit
    y, w = torch.randint(0, 4, (50,), generator=g), torch.rand(50, generator=g, dtype=torch.float64)

    def network():
        scales = None if log_scales is None else log_scales.clone()
        return PrototypeAttention(keys.clone(), values.clone(), idw, power, 1e-3, True, scales, metric == "learned")

    ours = network()
    assert ours.shepard
    loss, grads = ours.loss_and_grads(X, y, w)

    reference = network()
    s = 1.0 if metric is None else reference.log_scales.exp()
    logits = torch.softmax(idw(X * s, reference.keys * s, power=power, eps=1e-3), dim=1) @ reference.values
    expected = torch.dot(torch.nn.functional.cross_entropy(logits, y, reduction="none"), w)
    expected_grads = torch.autograd.grad(expected / len(X), list(reference.parameters()))
    assert len(grads) == len(expected_grads) == (3 if metric == "learned" else 2)
    torch.testing.assert_close(loss, expected)
    for mine, theirs in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(mine, theirs)
    with torch.no_grad():  # and the written-out prediction is the same logits
        torch.testing.assert_close(ours(X), logits.detach())


@pytest.mark.parametrize("value_scale", [1.0, 1e3])
@pytest.mark.parametrize("power", [3.0, 20.0])
def test_training_step_is_the_same_on_numpy_and_torch(power, value_scale):
    """The written-out step runs on numpy arrays on the CPU and on torch tensors elsewhere (a GPU):
    both give the same loss and gradients, also with logits where numpy's softmax must shift them."""
    g = torch.Generator().manual_seed(1)
    X, keys = torch.randn(40, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    values, log_scales = (
        torch.randn(7, 3, generator=g, dtype=torch.float64),
        0.2 * torch.randn(5, generator=g, dtype=torch.float64),
    )
    y, w = torch.randint(0, 3, (40,), generator=g), torch.rand(40, generator=g, dtype=torch.float64)
    X[2] = keys[0]  # an exact hit
    values *= value_scale  # 1e3: logits beyond ±354, where exp would overflow float64 unshifted
    arrays = [X, y, w, keys, values, log_scales]
    on_torch = _shepard.loss_and_grads(*[a.clone() for a in arrays], True, power, 1e-3)
    on_numpy = _shepard.loss_and_grads(*[a.numpy().copy() for a in arrays], True, power, 1e-3)
    assert isinstance(on_numpy[0], np.floating) and all(isinstance(a, np.ndarray) for a in on_numpy[1])
    torch.testing.assert_close(torch.as_tensor(on_numpy[0]), on_torch[0])
    for mine, theirs in zip(on_numpy[1], on_torch[1], strict=True):
        torch.testing.assert_close(torch.from_numpy(mine), theirs)
