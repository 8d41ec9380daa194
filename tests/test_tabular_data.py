"""The raw tables of benchmarks/tabular.py load offline from the files that the dev extra's packages ship.

A package that stops shipping its file, or ships a changed table, fails here rather than in the benchmark.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.api.types import is_numeric_dtype

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tabular  # noqa: E402

# name: rows, columns, text columns, classes, missing cells
EXPECTED = {
    "penguins": (344, 7, 2, 3, 19),
    "penguins_sex": (333, 10, 4, 2, 17),
    "titanic": (1313, 3, 2, 2, 558),
    "towny": (414, 22, 2, 5, 23),
    "mpg": (234, 9, 4, 7, 0),
    "superstore": (9994, 8, 4, 3, 0),
}


def test_every_loader_is_checked_and_most_tables_miss_cells():
    assert set(EXPECTED) == set(tabular.LOADERS)
    assert sum(missing > 0 for *_, missing in EXPECTED.values()) >= 3


@pytest.mark.parametrize("name", list(EXPECTED))
def test_loader_gives_the_raw_table(name):
    X, y = tabular.LOADERS[name]()
    rows, columns, n_text, classes, missing = EXPECTED[name]
    assert isinstance(X, pd.DataFrame) and isinstance(y, pd.Series)
    assert X.shape == (rows, columns) and len(y) == rows
    assert X.index.equals(pd.RangeIndex(rows)) and y.index.equals(X.index)
    assert y.name not in X.columns and y.notna().all() and y.nunique() == classes
    assert y.value_counts().min() >= 5  # every class in each of 5 stratified folds
    text = [column for column in X.columns if not is_numeric_dtype(X[column])]
    assert len(text) == n_text
    for column in text:
        assert X[column].dtype == object
        values = X[column]
        assert values.dropna().map(type).eq(str).all()
        assert values[values.isna()].map(lambda cell: isinstance(cell, float) and np.isnan(cell)).all()  # NaN
    assert int(X.isna().sum().sum()) == missing


def test_subsampling_is_seeded_and_categories_are_what_hgb_reads():
    first, again = tabular.datasets(max_rows=300, seed=0), tabular.datasets(max_rows=300, seed=0)
    assert list(first) == list(EXPECTED)
    for name, (X, y, n_rows) in first.items():
        assert n_rows == EXPECTED[name][0] and len(X) == len(y) == min(300, n_rows)
        pd.testing.assert_frame_equal(X, again[name][0])
        pd.testing.assert_series_equal(y, again[name][1])
        as_category = tabular.to_category(X)
        assert all(isinstance(as_category[c].dtype, pd.CategoricalDtype) == (c in X.select_dtypes(object)) for c in X)
        assert as_category.isna().sum().sum() == X.isna().sum().sum()


def test_missing_file_names_the_dev_extra():
    with pytest.raises(FileNotFoundError, match=r"\.\[dev\]"):
        tabular.package_file("palmerpenguins", "data/no_such_table.csv")
    with pytest.raises(ModuleNotFoundError, match=r"\.\[dev\]"):
        tabular.package_file("no_such_package_protoattn")
