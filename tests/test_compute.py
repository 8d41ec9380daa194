"""Where the estimator computes: the device it trains and predicts on, and the CPU threads it takes."""

import io
import threading

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info

from protoattn import IDWAttentionClassifier
from protoattn.attention import idw

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_two_threads = pytest.mark.skipif(torch.get_num_threads() < 2, reason="torch runs on one thread here")


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _threads_seen(record, wait=None):
    """An IDW score that records torch's thread count in the calling thread on its first call."""

    def score(X, K):
        if not record:
            record.append(torch.get_num_threads())
            if wait is not None:
                wait()
        return idw(X, K, power=2.0)

    return score


# ---------------------------------------------------------------- threads


@needs_two_threads
def test_fit_and_predict_run_torch_on_one_thread_and_restore_the_count(iris):
    X, y = iris
    budget = torch.get_num_threads()
    fit_threads, predict_threads = [], []
    clf = IDWAttentionClassifier(attention=_threads_seen(fit_threads), n_prototypes=6, max_epochs=2).fit(X, y)
    clf.attention_ = _threads_seen(predict_threads)  # the fitted score, which prediction uses
    clf.predict(X)
    assert fit_threads == predict_threads == [1]
    assert torch.get_num_threads() == budget


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.mark.skipif(max(_blas_threads() or [1]) < 2, reason="the BLAS runs on one thread here")
def test_training_limits_the_blas_to_one_thread_and_prediction_leaves_it(iris):
    X, y = iris
    before = _blas_threads()
    during_fit, during_predict = [], []

    def score(X, K, record):
        if not record:
            record.append(_blas_threads())
        return idw(X, K, power=2.0)

    clf = IDWAttentionClassifier(attention=lambda X, K: score(X, K, during_fit), n_prototypes=6, max_epochs=2)
    clf.fit(X, y)
    assert during_fit == [[1] * len(before)] and _blas_threads() == before  # restored
    clf.attention_ = lambda X, K: score(X, K, during_predict)
    clf.predict(X)
    assert during_predict == [before]


@needs_two_threads
def test_fits_running_at_once_in_threads_take_one_torch_thread_each(iris):
    X, y = iris
    budget = torch.get_num_threads()
    first_inside, second_seen = threading.Event(), threading.Event()
    first, second = [], []

    def fit_first():
        def hold():
            first_inside.set()
            second_seen.wait(timeout=60)

        IDWAttentionClassifier(attention=_threads_seen(first, hold), n_prototypes=6, max_epochs=2).fit(X, y)

    thread = threading.Thread(target=fit_first)
    thread.start()
    assert first_inside.wait(timeout=60)
    IDWAttentionClassifier(attention=_threads_seen(second, second_seen.set), n_prototypes=6, max_epochs=2).fit(X, y)
    thread.join()
    assert first == second == [1]
    assert torch.get_num_threads() == budget  # restored


# ----------------------------------------------------------------- device


def test_cuda_without_cuda_is_a_clear_error_and_changes_nothing(iris, no_cuda):
    X, y = iris
    clf = IDWAttentionClassifier(device="cuda")
    with pytest.raises(ValueError, match='device="cuda" but torch.cuda.is_available'):
        clf.fit(X, y)
    with pytest.raises(ValueError, match='device="cuda"'):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    assert not hasattr(clf, "classes_")


def test_auto_falls_back_to_the_cpu(iris, no_cuda):
    X, y = iris
    clf = IDWAttentionClassifier(device="auto", n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
    cpu = IDWAttentionClassifier(device="cpu", n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.prototypes_, cpu.prototypes_)


def test_a_gpu_model_predicts_on_a_machine_without_cuda(iris, no_cuda):
    X, y = iris
    clf = IDWAttentionClassifier(n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
    expected = clf.predict_proba(X)
    clf.set_params(device="cuda")  # as a model fitted on a GPU and loaded here
    np.testing.assert_array_equal(clf.predict_proba(X), expected)


@needs_cuda
def test_fit_and_predict_on_a_gpu_give_numpy_and_match_the_cpu(iris):
    X, y = iris
    gpu = IDWAttentionClassifier(device="cuda", n_prototypes=6, max_epochs=30, random_state=0).fit(X, y)
    for name in ("prototypes_", "logits_"):
        value = getattr(gpu, name)
        assert isinstance(value, np.ndarray) and value.dtype == np.float64
    assert gpu.score(X, y) > 0.9
    on_cpu = joblib.load(_dumped(gpu)).set_params(device="cpu")
    np.testing.assert_allclose(gpu.predict_proba(X), on_cpu.predict_proba(X), atol=1e-6)


@needs_cuda
def test_a_raw_table_trains_on_a_gpu_with_dropout():
    """Text columns, missing cells and attention dropout on the GPU's training path (autograd, each
    step's dropout mask moved to the device): as accurate as on the CPU, prototypes within the data."""
    import pandas as pd

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    colours = np.array(["red", "green", "blue"], dtype=object)
    X = pd.DataFrame(
        {
            "size": rng.normal(10 + 5 * y, 2),
            "mass": rng.normal(1000 * (1 + y), 300),
            "colour": colours[(y + (rng.random(300) < 0.2)) % 3],
        }
    )
    X.loc[::7, "size"] = np.nan
    X.loc[::11, "colour"] = None
    gpu = IDWAttentionClassifier(device="cuda", random_state=0).fit(X, y)
    cpu = IDWAttentionClassifier(random_state=0).fit(X, y)
    assert gpu.score(X, y) > cpu.score(X, y) - 0.03
    numeric = gpu.prototypes_frame()[["size", "mass"]]
    assert (numeric.min() >= X[["size", "mass"]].min()).all() and (numeric.max() <= X[["size", "mass"]].max()).all()
    assert set(gpu.prototypes_frame()["colour"]) <= set(colours)


@needs_cuda
def test_partial_fit_on_a_gpu(iris):
    X, y = iris
    clf = IDWAttentionClassifier(device="cuda", n_prototypes=6, random_state=0)
    for _ in range(10):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    assert isinstance(clf.prototypes_, np.ndarray)
    assert clf.score(X, y) > 0.9


@needs_cuda
def test_a_gpu_fitted_model_loaded_without_cuda_predicts_on_the_cpu(iris, monkeypatch):
    X, y = iris
    gpu = IDWAttentionClassifier(device="cuda", n_prototypes=6, max_epochs=10, random_state=0).fit(X, y)
    expected = gpu.predict(X)
    buffer = _dumped(gpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    np.testing.assert_array_equal(joblib.load(buffer).predict(X), expected)


def _dumped(model):
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    return buffer
