"""The estimator on a Dask cluster: a grid search through joblib, Incremental and ParallelPostFit.

An in-process LocalCluster (two single-threaded workers) stands in for a real one; the README's
"Scaling out" section shows the same calls against a scheduler address.
"""

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.preprocessing import StandardScaler

from protoattn import IDWAttentionClassifier

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
wrappers = pytest.importorskip("dask_ml.wrappers")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None, silence_logs=40
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(StandardScaler().fit_transform(X), y, test_size=0.25, random_state=0, stratify=y)


def test_grid_search_runs_on_the_cluster_through_joblib(client):
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    search = GridSearchCV(
        IDWAttentionClassifier(max_epochs=20, random_state=0),
        {"n_prototypes": [3, 9], "attention": ["idw", "dot"]},
        cv=3,
    )
    with distributed.get_task_stream(client) as tasks, joblib.parallel_config(backend="dask"):
        search.set_params(n_jobs=-1).fit(X, y)
    assert {task["worker"] for task in tasks.data} == set(client.scheduler_info()["workers"])
    serial = GridSearchCV(search.estimator, search.param_grid, cv=3, n_jobs=1).fit(X, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"], atol=0.02)
    assert search.best_score_ > 0.9
    assert isinstance(search.best_estimator_.prototypes_, np.ndarray)


def test_incremental_trains_from_a_chunked_array_through_partial_fit(client, digits):
    X_train, X_test, y_train, y_test = digits
    X = da.from_array(X_train, chunks=(300, 64))
    y = da.from_array(y_train, chunks=300)
    model = wrappers.Incremental(IDWAttentionClassifier(random_state=0), scoring="accuracy")
    model.fit(X, y, classes=np.arange(10))  # one pass: partial_fit on each block in turn
    model.partial_fit(X, y)  # a second pass, continuing
    assert model.estimator_.n_iter_ == 2 * X.numblocks[0]
    assert model.score(da.from_array(X_test, chunks=100), da.from_array(y_test, chunks=100)) > 0.93


def test_parallel_post_fit_predicts_a_chunked_array(client, digits):
    X_train, X_test, y_train, _ = digits
    clf = IDWAttentionClassifier(max_epochs=20, random_state=0).fit(X_train, y_train)
    model = wrappers.ParallelPostFit(clf)
    X = da.from_array(X_test, chunks=(100, 64))
    predicted = model.predict(X)
    assert isinstance(predicted, da.Array) and predicted.numblocks[0] == X.numblocks[0]
    np.testing.assert_array_equal(predicted.compute(), clf.predict(X_test))
    np.testing.assert_allclose(model.predict_proba(X).compute(), clf.predict_proba(X_test), atol=1e-12)
