"""Data sets for the notebooks and benchmarks, all available offline.

- :func:`load_moons_split`: the IDW attention paper's two moons (McCarter 2023): 100 points per moon for
  training and 20 per moon for validation, noise 0.1, fixed seeds, rounded to 6 decimals. Generated
  here; ``datasets/moons_*.csv`` in the repository are the same numbers, frozen.
- :func:`load_tabular`: scikit-learn's bundled ``iris``, ``wine``, ``breast_cancer`` and ``digits``, and
  ``waveform``, generated here from its definition (Breiman et al. 1984).
- :func:`load_mnist`: MNIST from OpenML, the only loader that needs the network (once; then cached).

See ``datasets/README.md`` for provenance.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine, make_moons
from sklearn.utils import Bunch, check_random_state

__all__ = ["MOONS_SEEDS", "TABULAR", "load_mnist", "load_moons_split", "load_tabular", "make_waveform"]

#: Seeds of the moons split (``make_moons(random_state=...)``).
MOONS_SEEDS = {"train": 0, "validation": 1}


def load_moons_split():
    """The IDW attention paper's two moons: 200 training and 40 validation points.

    Each set has equally many points per moon (100 and 20), Gaussian noise of standard deviation 0.1,
    and is drawn by :func:`sklearn.datasets.make_moons` with the seeds in ``MOONS_SEEDS``; coordinates are
    rounded to 6 decimals so that the numbers do not depend on the platform's ``sin``/``cos``.

    Returns
    -------
    X_train : ndarray of shape (200, 2)
    X_val : ndarray of shape (40, 2)
    y_train : ndarray of shape (200,)
        Labels 0 (upper moon) and 1 (lower moon).
    y_val : ndarray of shape (40,)

    Examples
    --------
    >>> from protoattn.datasets import load_moons_split
    >>> X_train, X_val, y_train, y_val = load_moons_split()
    >>> X_train.shape, X_val.shape, int(y_train.sum()), int(y_val.sum())
    ((200, 2), (40, 2), 100, 20)
    """
    parts = []
    for per_moon, seed in ((100, MOONS_SEEDS["train"]), (20, MOONS_SEEDS["validation"])):
        X, y = make_moons(n_samples=(per_moon, per_moon), noise=0.1, random_state=seed)
        parts.append((np.round(X, 6), y))
    (X_train, y_train), (X_val, y_val) = parts
    return X_train, X_val, y_train, y_val


def make_waveform(n_samples=5000, *, n_noise_features=19, random_state=0):
    """Breiman's waveform data: 3 classes of noisy mixtures of triangular waves on 21 positions.

    Each sample is ``u·h_a + (1-u)·h_b + ε`` with ``u ~ U(0, 1)`` and ``ε ~ N(0, 1)`` per position, for the
    pair of base waves ``(h_a, h_b)`` of its class: class 0 = (h1, h2), class 1 = (h1, h3), class 2 =
    (h2, h3), where ``h1(i) = max(6 - |i - 11|, 0)`` for positions i = 1..21, ``h2(i) = h1(i - 4)`` and
    ``h3(i) = h1(i + 4)`` (Breiman, Friedman, Olshen and Stone, "Classification and Regression Trees",
    1984, section 2.6.2). ``n_noise_features`` columns of pure N(0, 1) noise follow (19 in the classic
    40-feature version), which makes it a test of attending to the informative positions.

    Returns
    -------
    X : ndarray of shape (n_samples, 21 + n_noise_features)
    y : ndarray of shape (n_samples,)
        Classes 0, 1, 2, drawn with equal probability.
    """
    rng = check_random_state(random_state)
    positions = np.arange(1, 22)
    waves = np.maximum(6 - np.abs(positions[None, :] - 11 - np.array([[0], [4], [-4]])), 0)
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    y = rng.randint(3, size=n_samples)
    u = rng.uniform(size=(n_samples, 1))
    signal = u * waves[pairs[y, 0]] + (1 - u) * waves[pairs[y, 1]]
    X = np.hstack([signal + rng.normal(size=signal.shape), rng.normal(size=(n_samples, n_noise_features))])
    return X, y


def _waveform():
    X, y = make_waveform()
    names = [f"position_{i}" for i in range(1, 22)] + [f"noise_{i}" for i in range(1, X.shape[1] - 20)]
    return Bunch(
        data=X,
        target=y,
        feature_names=names,
        target_names=np.array(["h1+h2", "h1+h3", "h2+h3"]),
        DESCR=make_waveform.__doc__,
    )


#: Names accepted by :func:`load_tabular`.
TABULAR = {
    "iris": load_iris,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
    "digits": load_digits,
    "waveform": _waveform,
}


def load_tabular(name, *, return_X_y=False):
    """A tabular data set by name: one of ``TABULAR`` (no download; see ``datasets/README.md``).

    Parameters
    ----------
    name : {"iris", "wine", "breast_cancer", "digits", "waveform"}
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of the Bunch.

    Returns
    -------
    Bunch with ``data`` (ndarray, n_samples × n_features), ``target``, ``feature_names``,
    ``target_names`` and ``DESCR``; or ``(data, target)``.

    Examples
    --------
    >>> from protoattn.datasets import load_tabular
    >>> X, y = load_tabular("wine", return_X_y=True)
    >>> X.shape
    (178, 13)
    """
    if not isinstance(name, str) or name not in TABULAR:
        raise ValueError(f"Unknown data set {name!r}: expected one of {sorted(TABULAR)}.")
    full = TABULAR[name]()
    bunch = Bunch(
        data=np.asarray(full.data, dtype=np.float64),
        target=np.asarray(full.target),
        feature_names=[str(name) for name in full.feature_names],
        target_names=np.asarray(full.target_names),
        DESCR=full.DESCR,
    )
    return (bunch.data, bunch.target) if return_X_y else bunch


def load_mnist(*, data_home=None):
    """MNIST (70 000 images of 28×28 pixels, values 0..255) through :func:`sklearn.datasets.fetch_openml`.

    The first call downloads about 15 MB from OpenML (data set 554) and caches it under ``data_home``
    (scikit-learn's default when None); later calls read the cache. Without network and cache it raises
    :class:`OSError` with a message saying so, which benchmarks report as a skip.

    Returns
    -------
    X : ndarray of shape (70000, 784)
    y : ndarray of shape (70000,)
        Digit labels as integers.
    """
    from sklearn.datasets import fetch_openml

    try:
        X, y = fetch_openml(
            "mnist_784", version=1, return_X_y=True, as_frame=False, parser="liac-arff", data_home=data_home
        )
    except OSError as err:
        raise OSError(
            f"MNIST is not available offline: downloading it from OpenML failed ({err}). Run once with "
            "network access to cache it, or pass data_home= pointing to a cache."
        ) from err
    return X.astype(np.float64), y.astype(np.int64)
