"""Where torch computes: the device, and how many CPU threads a call may use."""

from __future__ import annotations

import functools
import threading

import torch
from threadpoolctl import ThreadpoolController

_state = threading.local()
_controller = None


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


def limit_threads(method=None, *, blas=False):
    """Run ``method`` with torch on one thread in the calling thread; with ``blas=True`` (training)
    numpy's BLAS too, through threadpoolctl.

    The work is many small operations (a training step is a batch against the prototypes, prediction
    goes through row chunks): a second thread saves little, and torch's OpenMP threads spinning
    beside the BLAS's made fits many times slower on 2 cores (``benchmarks/RESULTS.md``). torch's
    count is per thread, so calls from several threads (joblib, Dask) never oversubscribe the
    cores; nested calls keep the outer call's setting, and the counts are restored on return.
    """
    if method is None:
        return functools.partial(limit_threads, blas=blas)

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if getattr(_state, "limited", False):
            return method(*args, **kwargs)
        before = torch.get_num_threads()
        # Set only when it changes: torch also keeps the count for threads that start later.
        if before != 1:
            torch.set_num_threads(1)
        limiter = _blas().limit(limits=1, user_api="blas") if blas else None
        _state.limited = True
        try:
            return method(*args, **kwargs)
        finally:
            _state.limited = False
            if limiter is not None:
                limiter.restore_original_limits()
            if before != 1:
                torch.set_num_threads(before)

    return wrapper


def _blas():
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()  # finds the loaded BLAS libraries: milliseconds, so once
    return _controller
