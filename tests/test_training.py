"""The optimisation machinery: the merging of duplicate rows, the power and its schedule."""

import numpy as np

from protoattn._training import aggregate_duplicates, power_schedule


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
