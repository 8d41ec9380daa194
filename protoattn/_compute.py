"""Where torch computes: the device, and how many CPU threads a call may use."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import threading

import torch
from threadpoolctl import ThreadpoolController

_state = threading.local()


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
    numpy's BLAS on one thread too, process-wide while any such call runs (see
    :func:`_blas_on_one_thread`).

    The work is many small operations (a training step is a batch against the prototypes, prediction
    goes through row chunks): a second thread saves little, and torch's OpenMP threads spinning
    beside the BLAS's made fits many times slower on 2 cores (``benchmarks/RESULTS.md``). A fit thus
    computes the same (the same threads, the same rounding) from whichever thread it is made. Nested
    calls keep the outer call's setting, and the counts are restored on return.
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
        _state.limited = True
        try:
            with _blas_on_one_thread() if blas else contextlib.nullcontext():
                return method(*args, **kwargs)
        finally:
            _state.limited = False
            if before != 1:
                torch.set_num_threads(before)

    return wrapper


_parallel = {"calls": 0, "limiter": None}
_PARALLEL = threading.Lock()


@contextlib.contextmanager
def _blas_on_one_thread():
    """The BLAS on one thread while any caller is inside: process-wide through threadpoolctl, and in
    the calling thread through the BLAS's per-thread setting where it has one (OpenBLAS takes the
    process-wide limit from the main thread only: a fit in a worker thread would otherwise round
    differently). Every change happens under one lock and every thread sets its own count back to the
    count before the first call: OpenBLAS 0.3.31's per-thread setting changes the process's too, and two
    threads restoring what each had seen left every thread of the process on one core for good."""
    with _PARALLEL:
        if _parallel["calls"] == 0:
            libraries = _blas_libraries()
            _parallel["original"] = max((lib.num_threads for lib in libraries if lib.user_api == "blas"), default=1)
            _parallel["limiter"] = _parallel["controller"].limit(limits=1, user_api="blas")
        _parallel["calls"] += 1
        _set_local(1)
    try:
        yield
    finally:
        with _PARALLEL:
            _parallel["calls"] -= 1
            _set_local(_parallel["original"])
            if _parallel["calls"] == 0:
                _parallel["limiter"].restore_original_limits()


def _set_local(count):
    """Set the calling thread's own BLAS thread count, where the BLAS has such a setting."""
    for library in _blas_libraries():
        names = {
            "openblas": [
                f"{prefix}openblas_set_num_threads_local{suffix}"
                for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64"))
            ],
            "mkl": ["MKL_Set_Num_Threads_Local"],
        }.get(library.internal_api, [])
        for name in names:
            local = getattr(library.dynlib, name, None)
            if local is not None:
                local.restype, local.argtypes = ctypes.c_int, [ctypes.c_int]
                local(count)
                break


def _blas_libraries():
    if _parallel.get("controller") is None:  # finding the libraries takes milliseconds: once
        _parallel["controller"] = ThreadpoolController()
    return _parallel["controller"].lib_controllers
