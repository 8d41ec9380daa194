"""Raw tables: categories, missing values and any units, read back in the user's units (protoattn._tables)."""

import numpy as np
import pandas as pd
import pytest
import torch
from palmerpenguins import load_penguins
from sklearn.datasets import load_iris
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

from protoattn import IDWAttentionClassifier
from protoattn.attention import squared_distances


@pytest.fixture(scope="module")
def penguins():
    table = load_penguins()
    return table.drop(columns="species"), table["species"]


@pytest.fixture(scope="module")
def fitted(penguins):
    X, y = penguins
    return IDWAttentionClassifier(n_prototypes=9, random_state=0).fit(X, y)


def test_a_raw_penguin_table_fits_as_well_as_a_standardised_pipeline(penguins):
    X, y = penguins
    assert X.isna().any().any() and not pd.api.types.is_numeric_dtype(X["island"])  # text and empty cells
    scores = cross_val_score(
        IDWAttentionClassifier(random_state=0), X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0)
    )
    assert scores.mean() >= 0.97


def test_prototypes_are_plausible_rows_of_the_table(penguins, fitted):
    X, _ = penguins
    frame = fitted.prototypes_frame()
    assert list(frame.columns) == [*X.columns, "label", "patched"]
    assert fitted.prototypes_.dtype == object and not frame[list(X.columns)].isna().any().any()
    for column in X.columns:
        if pd.api.types.is_numeric_dtype(X[column]):
            assert X[column].min() <= frame[column].min() and frame[column].max() <= X[column].max(), column
        else:
            assert set(frame[column]) <= set(X[column].dropna()), column
    assert list(fitted.categories_[0]) == ["Biscoe", "Dream", "Torgersen"]
    assert fitted.is_categorical_.tolist() == [True, False, False, False, False, True, False]


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_units_do_not_change_training(scale):
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
    one = IDWAttentionClassifier(random_state=0).fit(X_train, y_train)
    other = IDWAttentionClassifier(random_state=0).fit(X_train * scale, y_train)
    np.testing.assert_array_equal(other.predict(X_test * scale), one.predict(X_test))
    np.testing.assert_allclose(other.prototypes_ / scale, one.prototypes_, rtol=1e-6)
    np.testing.assert_allclose(other.predict_proba(X_test * scale), one.predict_proba(X_test), atol=1e-6)


def test_one_column_in_other_units_changes_nothing():
    X, y = load_iris(return_X_y=True)
    grams = X * np.array([1.0, 1e3, 1.0, 1e-3])
    one = IDWAttentionClassifier(random_state=0).fit(X, y)
    other = IDWAttentionClassifier(random_state=0).fit(grams, y)
    assert other.score(grams, y) == one.score(X, y)


def test_a_categorical_feature_starts_out_spreading_the_rows_like_a_numeric_one(penguins, fitted):
    """A one-hot block is scaled by the root of its total variance, over the observed cells: in the
    model's encoding two random rows then differ by 2 in squared distance on average in every feature,
    numeric or categorical."""
    X, _ = penguins
    for j, column in enumerate(X.columns):
        observed = X[column].dropna()
        if fitted.is_categorical_[j]:
            shares = observed.value_counts(normalize=True).to_numpy()
            assert fitted.feature_means_[j] == 0.0
            assert fitted.feature_stds_[j] == pytest.approx(np.sqrt(1.0 - np.sum(shares**2)))
        else:
            assert fitted.feature_stds_[j] == pytest.approx(observed.std(ddof=0))
    offset, scale, columns = fitted._column_standardisation()
    Z = (fitted._encoded(X.dropna()) - offset) / scale
    for j in range(X.shape[1]):
        block = Z[:, columns == j]
        mean_square_difference = 2.0 * np.sum(block.var(0))  # E‖z_a - z_b‖² over independent rows a, b
        assert mean_square_difference == pytest.approx(2.0, rel=0.05), X.columns[j]
    # Weights count like repeated rows, here too.
    weights = np.where(X["island"] == "Biscoe", 3, 1)
    repeated = X.loc[X.index.repeat(weights)]
    y = penguins[1]
    weighted = IDWAttentionClassifier(n_prototypes=3, max_epochs=1, random_state=0).fit(X, y, sample_weight=weights)
    copies = IDWAttentionClassifier(n_prototypes=3, max_epochs=1, random_state=0).fit(repeated, y.loc[repeated.index])
    np.testing.assert_allclose(weighted.feature_stds_, copies.feature_stds_, rtol=1e-12)


@pytest.mark.parametrize("complete", [False, True], ids=["autograd step (missing cells)", "CPU fast step"])
def test_a_categorical_features_scale_learns_at_the_full_rate(penguins, complete):
    """Adam's first step is the learning rate itself: the metric's scale of a categorical feature moves
    by it, a numeric feature's by a tenth of it, on either training step."""
    X, y = penguins
    if complete:
        X, y = X.dropna(), y[X.notna().all(axis=1)]
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=1, learning_rate=0.05, random_state=0).fit(X, y)
    moved = np.abs(np.log(clf.feature_scales_))
    np.testing.assert_allclose(moved, np.where(clf.is_categorical_, 0.05, 0.005), rtol=1e-3)


def test_missing_values_at_fit_predict_explain_and_patch(penguins, fitted):
    X, _ = penguins
    rows = X.iloc[[3, 10, 20]].copy()  # row 3 has only island and year
    assert rows.isna().any(axis=1).iloc[0]
    proba = fitted.predict_proba(rows)
    assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(1), 1.0)
    why = fitted.explain(rows)
    assert why.feature_terms[0, :, 1:6].sum() == 0  # the missing features add nothing
    x = rows.iloc[0]
    clf = _copy(fitted)
    index = clf.add_prototype(x, "Gentoo")
    assert clf.predict(rows.iloc[[0]])[0] == "Gentoo"
    new = clf.prototypes_[index]
    assert new[0] == "Torgersen" and new[6] == 2007 and not pd.isna(new).any()  # missing cells filled in


def test_a_row_with_every_value_missing_gets_the_average_vote(fitted, penguins):
    X, _ = penguins
    empty = pd.DataFrame([[None] * X.shape[1]], columns=X.columns)
    proba = fitted.predict_proba(empty)
    np.testing.assert_allclose(proba.sum(), 1.0)


def test_unknown_categories_count_as_missing(fitted, penguins):
    X, _ = penguins
    row = X.iloc[[0]].copy()
    unknown, missing = row.copy(), row.copy()
    unknown["island"], missing["island"] = "Atlantis", None
    np.testing.assert_allclose(fitted.predict_proba(unknown), fitted.predict_proba(missing))


def test_feature_terms_sum_to_the_models_squared_distance(fitted, penguins):
    X, _ = penguins
    rows = X.iloc[:40]
    why = fitted.explain(rows, top_k=3)
    network = fitted._network(torch.float64)
    with torch.no_grad():
        distances = squared_distances(*network.scaled(torch.as_tensor(fitted._validate_X(rows)))).numpy()
    expected = np.take_along_axis(distances, why.prototype_indices, axis=1)
    np.testing.assert_allclose(why.feature_terms.sum(-1), expected, rtol=1e-9, atol=1e-9)
    frame = why.feature_frame(0)
    assert list(frame.columns) == ["feature", "sample", "prototype", "term"]
    assert frame["term"].is_monotonic_decreasing and np.isclose(frame["term"].sum(), expected[0, 0])
    assert list(why.to_frame()["sample"][:3]) == [0, 0, 0] and why.index.tolist() == list(rows.index)


def test_prototypes_frame_round_trips_through_save_and_load(fitted, penguins, tmp_path):
    X, _ = penguins
    path = tmp_path / "penguins.protoattn"
    fitted.save(path)
    loaded = IDWAttentionClassifier.load(path)
    pd.testing.assert_frame_equal(loaded.prototypes_frame(), fitted.prototypes_frame())
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


@pytest.mark.parametrize("given", [["island", "sex"], [0, 5], np.array([1, 0, 0, 0, 0, 1, 0], dtype=bool)])
def test_categorical_features_by_name_index_or_mask(penguins, given):
    X, y = penguins
    as_codes = X.assign(island=X["island"].astype("category").cat.codes, sex=X["sex"].map({"male": 1, "female": 0}))
    clf = IDWAttentionClassifier(categorical_features=given, max_epochs=5, random_state=0).fit(as_codes, y)
    assert clf.is_categorical_.tolist() == [True, False, False, False, False, True, False]


def test_text_without_categorical_features_says_how_to_fix(penguins):
    X, y = penguins
    with pytest.raises(ValueError, match="not numbers.*categorical_features"):
        IDWAttentionClassifier(categorical_features=None).fit(X, y)


def test_sparse_input_predicts_like_dense():
    import scipy.sparse as sp

    X, y = load_iris(return_X_y=True)
    dense = IDWAttentionClassifier(random_state=0).fit(X, y)
    sparse = IDWAttentionClassifier(random_state=0).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.predict_proba(sp.csr_matrix(X)), dense.predict_proba(X))


def _copy(clf):
    import copy

    return copy.deepcopy(clf)


def test_a_tfidf_text_pipeline_trains_and_predicts_on_sparse_rows():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    topics = {"sport": "goal match team score league player coach", "food": "bread cheese soup salt oven recipe"}
    texts, labels = [], []
    for label, words in topics.items():
        for _ in range(40):
            texts.append(" ".join(rng.choice(words.split(), size=6)))
            labels.append(label)
    model = make_pipeline(TfidfVectorizer(), IDWAttentionClassifier(n_prototypes=4, random_state=0))
    model.fit(texts, labels)
    assert model.score(texts, labels) == 1.0
    assert model.predict(["the team scored a goal", "salt the soup"]).tolist() == ["sport", "food"]


@pytest.fixture(scope="module")
def amounts():
    """Towns: a heavy-tailed population (never negative), a mostly-zero count, a signed change and a
    category; the kind decided by the population's order of magnitude and the change."""
    rng = np.random.default_rng(0)
    n = 400
    population = np.exp(rng.normal(8.5, 1.5, n)).round()
    change = rng.normal(0, 1, n)
    X = pd.DataFrame(
        {
            "population": population,
            "closures": np.where(rng.random(n) < 0.8, 0.0, rng.integers(1, 9, n)),  # median 0
            "change": change,
            "region": rng.choice(["north", "south"], n),
        }
    )
    y = np.where(np.log(population) + 0.5 * change > 8.5, "town", "village")
    return X, y


def test_auto_puts_heavy_tailed_amounts_on_a_logarithmic_scale(amounts):
    X, y = amounts
    clf = IDWAttentionClassifier(random_state=0).fit(X, y)
    assert clf.log_units_.tolist() == [X["population"].median(), 0.0, 0.0, 0.0]
    frame = clf.prototypes_frame()  # still in the user's units, within the training range
    assert X["population"].min() <= frame["population"].min() and frame["population"].max() <= X["population"].max()
    plain = IDWAttentionClassifier(random_state=0, log_features=None).fit(X, y)
    assert not plain.log_units_.any()
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    logged = cross_val_score(IDWAttentionClassifier(random_state=0), X, y, cv=folds).mean()
    assert logged > cross_val_score(IDWAttentionClassifier(random_state=0, log_features=None), X, y, cv=folds).mean()


def test_auto_puts_profits_and_losses_on_a_logarithmic_scale():
    """A signed amount whose spread a few extremes make (a profit) is compared on the logarithmic scale,
    unit its median magnitude; a signed change with ordinary tails, two clusters far apart and a centred
    indicator (most rows one value) are not."""
    rng = np.random.default_rng(0)
    n = 400
    magnitude = np.exp(rng.normal(3, 2, n)).round(2)
    profit = np.where(rng.random(n) < 0.25, -magnitude, magnitude)
    change = rng.normal(0, 1, n)
    X = pd.DataFrame(
        {
            "profit": profit,
            "change": change,
            "clusters": np.where(rng.random(n) < 0.6, 0.0, 100.0) + rng.normal(0, 0.1, n),
            "indicator": (rng.random(n) < 0.05) - 0.05,
        }
    )
    y = np.where(profit < 0, "loss", np.where(np.log(magnitude) + 0.5 * change > 3, "large", "small"))
    clf = IDWAttentionClassifier(random_state=0).fit(X, y)
    assert clf.log_units_.tolist() == [np.median(magnitude), 0.0, 0.0, 0.0]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    logged = cross_val_score(IDWAttentionClassifier(random_state=0), X, y, cv=folds).mean()
    plain = cross_val_score(IDWAttentionClassifier(random_state=0, log_features=None), X, y, cv=folds).mean()
    assert logged > plain + 0.1


def test_a_logarithmic_scale_ignores_units_and_takes_any_value(amounts):
    X, y = amounts
    one = IDWAttentionClassifier(random_state=0).fit(X, y)
    other = IDWAttentionClassifier(random_state=0).fit(X.assign(population=X["population"] * 1e3), y)
    np.testing.assert_allclose(other.log_units_[0], one.log_units_[0] * 1e3)
    scaled = X.assign(population=X["population"] * 1e3)
    np.testing.assert_allclose(other.predict_proba(scaled), one.predict_proba(X), atol=1e-6)
    unusual = X.iloc[:3].assign(population=[0.0, -50.0, np.nan])  # asinh is defined everywhere
    assert np.all(np.isfinite(one.predict_proba(unusual)))
    why = one.explain(unusual, top_k=2)
    assert np.all(np.isfinite(why.feature_terms))


def test_log_features_by_name_and_what_it_refuses(amounts, tmp_path):
    X, y = amounts
    clf = IDWAttentionClassifier(random_state=0, log_features=["closures"]).fit(X, y)
    assert clf.log_units_[1] == X["closures"][X["closures"] != 0].abs().sum() / len(X)  # mean magnitude: median 0
    assert clf.log_units_[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="log_features names categorical features"):
        IDWAttentionClassifier(log_features=["region"]).fit(X, y)
    with pytest.raises(ValueError, match="log_features names 'size'"):
        IDWAttentionClassifier(log_features=["size"]).fit(X, y)
    clf.save(tmp_path / "towns.protoattn")
    loaded = IDWAttentionClassifier.load(tmp_path / "towns.protoattn")
    np.testing.assert_array_equal(loaded.log_units_, clf.log_units_)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_a_stream_keeps_the_scales_of_its_first_call(amounts):
    X, y = amounts
    clf = IDWAttentionClassifier(random_state=0)
    clf.partial_fit(X.iloc[:200], y[:200], classes=np.unique(y))
    units = clf.log_units_.copy()
    clf.partial_fit(X.iloc[200:].assign(population=X["population"].iloc[200:] * 10), y[200:])
    np.testing.assert_array_equal(clf.log_units_, units)
    assert np.all(np.isfinite(clf.predict_proba(X)))
