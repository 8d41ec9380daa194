"""The data sets: the paper's moons split, the files that freeze it, the tabular loaders."""

import runpy
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from protoattn.datasets import TABULAR, load_mnist, load_moons_split, load_tabular, make_waveform

DATASETS = Path(__file__).resolve().parents[1] / "datasets"


def test_moons_split_is_the_papers_setting():
    X_train, X_val, y_train, y_val = load_moons_split()
    assert X_train.shape == (200, 2) and X_val.shape == (40, 2)
    assert np.bincount(y_train).tolist() == [100, 100] and np.bincount(y_val).tolist() == [20, 20]
    assert not np.isin(X_val, X_train).all(axis=1).any()  # independent draws
    np.testing.assert_array_equal(X_train, np.round(X_train, 6))
    # Upper moon (label 0) lies above the lower one on average.
    assert X_train[y_train == 0, 1].mean() > X_train[y_train == 1, 1].mean()
    for again, first in zip(load_moons_split(), (X_train, X_val, y_train, y_val), strict=True):
        np.testing.assert_array_equal(again, first)


def test_moons_files_hold_the_loaders_numbers():
    X_train, X_val, y_train, y_val = load_moons_split()
    for name, X, y in (("moons_train.csv", X_train, y_train), ("moons_validation.csv", X_val, y_val)):
        rows = np.loadtxt(DATASETS / name, delimiter=",", skiprows=1)
        np.testing.assert_array_equal(rows[:, :2], X)
        np.testing.assert_array_equal(rows[:, 2], y)


def test_regenerating_gives_identical_files(tmp_path):
    script = runpy.run_path(str(DATASETS / "make_datasets.py"))
    written = script["main"]([str(tmp_path)])
    committed = sorted(p.name for p in DATASETS.iterdir() if p.suffix == ".csv")
    assert sorted(p.name for p in written) == committed
    for path in written:
        assert path.read_bytes() == (DATASETS / path.name).read_bytes(), path.name


@pytest.mark.parametrize("name", sorted(TABULAR))
def test_tabular_loaders_agree_on_their_shape(name):
    bunch = load_tabular(name)
    n, d = bunch.data.shape
    assert bunch.data.dtype == np.float64 and np.isfinite(bunch.data).all()
    assert bunch.target.shape == (n,) and len(bunch.feature_names) == d
    assert len(np.unique(bunch.target)) == len(bunch.target_names) >= 2
    X, y = load_tabular(name, return_X_y=True)
    np.testing.assert_array_equal(X, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)


def test_unknown_tabular_name_lists_the_choices():
    with pytest.raises(ValueError, match="expected one of .*waveform"):
        load_tabular("mnist")


def test_waveform_follows_its_definition():
    X, y = make_waveform(30000, random_state=1)
    assert X.shape == (30000, 40)
    # Noise features have mean 0 and variance 1. With E[u] = 1/2, E[x_i] = (h_a(i) + h_b(i)) / 2: at
    # position 11, h1 = 6 and h2 = h3 = 2; at position 15, h1 = 2, h2 = 6 and h3 = 0.
    np.testing.assert_allclose(X[:, 21:].mean(0), 0, atol=0.03)
    np.testing.assert_allclose(X[:, 21:].var(0), 1, atol=0.05)
    np.testing.assert_allclose([X[y == c, 10].mean() for c in range(3)], [4, 4, 2], atol=0.05)
    np.testing.assert_allclose([X[y == c, 14].mean() for c in range(3)], [4, 1, 3], atol=0.05)
    np.testing.assert_array_equal(make_waveform(50, random_state=3)[0], make_waveform(50, random_state=3)[0])


def test_mnist_offline_raises_a_clear_oserror(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("sklearn.datasets.fetch_openml", offline)
    with pytest.raises(OSError, match="MNIST is not available offline.*no network"):
        load_mnist()
