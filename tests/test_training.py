"""The optimisation machinery: the merging of duplicate rows, the power and its schedule, attention
dropout."""

import numpy as np
import torch

from protoattn._network import PrototypeAttention
from protoattn._training import aggregate_duplicates, keep_mask, power_schedule
from protoattn.attention import idw


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


def test_auto_power_is_shepards_two_in_the_plane_and_grows_with_the_root_of_the_dimension():
    from protoattn import IDWAttentionClassifier

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    powers = {}
    for d in (1, 2, 4, 8, 13, 32, 64):
        X = rng.standard_normal((40, d))
        powers[d] = IDWAttentionClassifier(n_prototypes=2, max_epochs=2, random_state=0).fit(X, y).power_
    assert powers == {1: 2.0, 2: 2.0, 4: 2.0, 8: 4.0, 13: 6.0, 32: 8.0, 64: 12.0}
    other = IDWAttentionClassifier(attention="gaussian", n_prototypes=2, max_epochs=2).fit(X, y)
    assert other.power_ == 2.0


def test_auto_power_counts_near_copies_of_a_feature_once():
    """Repeated measures (a population at several censuses, with missing cells) and one length in two
    units span one dimension each: 2 quantities and 4 other features give d = 6, power 4, where the 21
    columns would give 6; a categorical feature counts as one, whatever its categories."""
    import pandas as pd

    from protoattn import IDWAttentionClassifier

    rng = np.random.default_rng(0)
    n = 300
    population = np.exp(rng.normal(8, 1.5, n))
    length = rng.normal(40, 5, n)
    columns = {f"population_{year}": population * rng.normal(1, 0.02, n) for year in range(1996, 2026, 2)}
    columns["population_1996"][::17] = np.nan
    columns |= {"length_mm": length, "length_in": length / 25.4 + rng.normal(0, 0.01, n)}
    columns |= {f"x{j}": rng.standard_normal(n) for j in range(3)}
    columns["colour"] = rng.choice(["red", "green", "blue"], n)
    X, y = pd.DataFrame(columns), (length > 40).astype(int)
    assert X.shape[1] == 21
    clf = IDWAttentionClassifier(n_prototypes=2, max_epochs=1, random_state=0).fit(X, y)
    assert clf.power_ == 4.0  # d = 1 + 1 + 3 + 1 = 6
    assert IDWAttentionClassifier(n_prototypes=2, max_epochs=1).partial_fit(X, y, classes=[0, 1]).power_ == 4.0
    independent = X.assign(**{c: rng.standard_normal(n) for c in X.columns[:15]})
    assert IDWAttentionClassifier(n_prototypes=2, max_epochs=1, random_state=0).fit(independent, y).power_ == 6.0


def test_dropout_drops_its_share_and_leaves_every_row_a_prototype():
    generator = torch.Generator().manual_seed(0)
    keep = keep_mask(50, 4000, 0.1, generator)
    assert keep.shape == (50, 4000) and keep.dtype == torch.bool
    assert abs(1 - keep.float().mean().item() - 0.1) < 0.005
    for dropout in (0.9, 0.999):  # rows that would lose both prototypes keep them
        assert keep_mask(2, 1000, dropout, generator).any(0).all()


def test_a_row_that_dropout_would_leave_without_weight_keeps_every_prototype():
    """With reaches (a patch's prototype is 0 beyond it), dropping a row's only prototype within reach
    must not leave it weights of 0/0: it keeps its weights as without dropout."""
    keys = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    network = PrototypeAttention(keys, torch.eye(3), idw, 2.0, 1e-3, reach=torch.tensor([torch.inf, 1.0, 1.0]))
    X = torch.tensor([[4.5, 0.0], [0.5, 0.5]])
    keep = torch.tensor([[False, False, True], [True, False, True]])  # row 0 keeps one beyond reach alone
    with torch.no_grad():
        weights = network.weights(X, keep)
        np.testing.assert_array_equal(weights[0].numpy(), network.weights(X)[0].numpy())
        assert weights[1, 1] == 0 and weights[1, 2] == 0 and weights[1, 0] == 1  # the others beyond reach
    assert torch.isfinite(weights).all()


def test_dropout_is_for_attention_weights_only():
    """The ReLU baseline has hidden units, not weights that others share when one is dropped: it trains
    without dropout whatever the parameter says; a softmax score trains with it."""
    from protoattn import IDWAttentionClassifier

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 3)), np.arange(60) % 2

    def fitted(**params):
        return IDWAttentionClassifier(n_prototypes=4, max_epochs=5, random_state=0, **params).fit(X, y).logits_

    np.testing.assert_array_equal(fitted(attention="relu", dropout=0.5), fitted(attention="relu", dropout=0.0))
    assert not np.array_equal(fitted(dropout=0.5), fitted(dropout=0.0))


def test_dropout_keeps_two_prototypes_on_the_data():
    """Readable prototypes: without dropout, a two-prototype IDW model on the two moons pushes its
    prototypes to the corners of the data (0.3-0.4 from every training row at some seeds); with it, a
    row is now and then predicted by the other class's prototype alone, so each stays among its rows."""
    from protoattn import IDWAttentionClassifier
    from protoattn.datasets import load_moons_split

    X, _, y, _ = load_moons_split()
    for seed in range(4):
        clf = IDWAttentionClassifier(n_prototypes=2, random_state=seed).fit(X, y)
        nearest = np.linalg.norm(clf.prototypes_[:, None] - X[None], axis=2).min(1)
        assert nearest.max() < 0.2, (seed, nearest)
