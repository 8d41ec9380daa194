"""One fitted estimator serves predictions from many threads at once."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.datasets import make_classification

from protoattn import IDWAttentionClassifier

N_THREADS = 8


def test_predicting_from_8_threads_at_once_matches_serial_calls():
    X, y = make_classification(2000, n_features=20, n_informative=10, n_classes=4, random_state=0)
    clf = IDWAttentionClassifier(n_prototypes=20, max_epochs=5, random_state=0).fit(X, y)
    X32 = X.astype(np.float32)
    calls = [
        lambda: clf.predict(X),
        lambda: clf.predict_proba(X),
        lambda: clf.decision_function(X32),
        lambda: clf.attention_weights(X),
        lambda: clf.explain(X, top_k=3).contributions,
        lambda: clf.predict_log_proba(X32),
        lambda: clf.predict_proba(X[::-1]),
        lambda: clf.score(X, y),
    ]
    serial = [call() for call in calls]
    start = threading.Barrier(N_THREADS)

    def run(i):
        start.wait()  # all threads call at the same moment
        return [calls[(i + k) % len(calls)]() for k in range(len(calls))]

    with ThreadPoolExecutor(N_THREADS) as pool:
        results = list(pool.map(run, range(N_THREADS)))
    for i, answers in enumerate(results):
        for k, answer in enumerate(answers):
            np.testing.assert_array_equal(answer, serial[(i + k) % len(calls)])
