"""Where torch computes: the device, and how many CPU threads a call may use."""

from __future__ import annotations

import functools
import threading

import torch

_ACTIVE_LOCK = threading.Lock()
_active_calls = 0
_thread_state = threading.local()


def resolve_device(device: str, *, fitting: bool) -> torch.device:
    """The torch device for ``device="cpu" | "cuda" | "auto"``.

    ``"auto"`` is CUDA when available, else the CPU. ``"cuda"`` without CUDA is an error when
    fitting; when predicting it falls back to the CPU, so a model fitted on a GPU still predicts
    after it is loaded on a machine without one.
    """
    if device == "cpu" or not torch.cuda.is_available():
        if device == "cuda" and fitting:
            raise ValueError(
                'device="cuda" but torch.cuda.is_available() is False (no CUDA GPU, or a CPU-only '
                'torch build); use device="cpu", or device="auto" to use a GPU only when there is one.'
            )
        return torch.device("cpu")
    return torch.device("cuda")


def limit_threads(method):
    """Run ``method`` with torch's CPU threads shared among the calls running at once in this process.

    torch runs each operation on up to ``torch.get_num_threads()`` threads, a count that already
    follows ``OMP_NUM_THREADS``, joblib's per-worker limit in its process-based workers and
    threadpoolctl's ``threadpool_limits``. Calls made at the same time from several threads of one
    process (joblib's threading backend, a Dask worker's threads, the user's own) would each use
    that many and oversubscribe the cores: here each call gets that count divided by the number of
    calls running when it starts (itself included), at least 1, and the count is restored afterwards.
    Only torch's own thread count changes: limiting every OpenMP runtime through threadpoolctl
    (scikit-learn's too) made OpenBLAS warn "Detect OpenMP Loop" in threaded grid searches. Nested
    calls in the same thread keep the outer call's count.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if getattr(_thread_state, "limited", False):
            return method(*args, **kwargs)
        global _active_calls
        with _ACTIVE_LOCK:
            _active_calls += 1
            active = _active_calls
        before = torch.get_num_threads()
        threads = max(1, before // active)
        # Set only when it changes: torch also stores the count for threads that start later.
        if threads != before:
            torch.set_num_threads(threads)
        _thread_state.limited = True
        try:
            return method(*args, **kwargs)
        finally:
            _thread_state.limited = False
            if threads != before:
                torch.set_num_threads(before)
            with _ACTIVE_LOCK:
                _active_calls -= 1

    return wrapper
