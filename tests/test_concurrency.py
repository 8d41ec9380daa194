"""One fitted estimator serves predictions from many threads at once."""

import sys
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


def test_patching_beside_predictions_gives_the_model_before_or_after():
    # add_prototype and remove_prototypes replace several fitted arrays; a prediction running at the
    # same time must see all of them before or all after, never a mix (a shape error or a wrong answer).
    X, y = make_classification(300, n_features=8, n_informative=5, n_classes=3, random_state=0)
    clf = IDWAttentionClassifier(n_prototypes=9, max_epochs=3, random_state=0).fit(X, y)
    x, label = X[:1] + 0.5, (clf.predict(X[:1])[0] + 1) % 3

    def outputs():
        return clf.predict_proba(X), clf.explain(X[:20], top_k=2).contributions

    before = outputs()
    index = clf.add_prototype(x, label)
    after = outputs()
    clf.remove_prototypes([index])
    stop = threading.Event()

    def patch():
        while not stop.is_set():
            clf.remove_prototypes([clf.add_prototype(x, label)])

    def predict(_):
        seen = set()
        for _ in range(30):
            for now, old, new in zip(outputs(), before, after, strict=True):  # each call on its own
                seen.add("before" if np.array_equal(now, old) else "after" if np.array_equal(now, new) else "mixed")
        return seen

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, to hit the moment of a patch
    try:
        with ThreadPoolExecutor(4) as pool:
            patcher = pool.submit(patch)
            try:
                seen = set().union(*pool.map(predict, range(3)))
            finally:
                stop.set()
            patcher.result()
    finally:
        sys.setswitchinterval(interval)
    assert seen <= {"before", "after"}


def test_a_fit_in_a_worker_thread_equals_the_same_fit_in_the_main_thread():
    # Training limits the BLAS to one thread in the calling thread, whichever it is. threadpoolctl's
    # limit was process-wide and, for OpenBLAS, taken only from the thread that first set it (the
    # main one): in a worker the BLAS kept every core and rounded its products differently.
    X, y = make_classification(3000, n_features=50, n_informative=10, n_classes=3, random_state=0)

    def fit():
        return IDWAttentionClassifier(n_prototypes=60, max_epochs=5, random_state=0).fit(X, y)

    main = fit()
    with ThreadPoolExecutor(1) as pool:
        worker = pool.submit(fit).result()
    np.testing.assert_array_equal(worker.prototypes_, main.prototypes_)
    np.testing.assert_array_equal(worker.logits_, main.logits_)
    np.testing.assert_array_equal(worker.feature_scales_, main.feature_scales_)
