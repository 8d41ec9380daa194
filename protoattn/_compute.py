"""Where torch computes: the device, and how many CPU threads a call may use."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import functools
import itertools
import threading

import torch
from threadpoolctl import ThreadpoolController

_state = threading.local()
_controller = None
_libraries = None


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
    numpy's BLAS too, also in the calling thread only.

    The work is many small operations (a training step is a batch against the prototypes, prediction
    goes through row chunks): a second thread saves little, and torch's OpenMP threads spinning
    beside the BLAS's made fits many times slower on 2 cores (``benchmarks/RESULTS.md``). Every limit
    is the calling thread's own, so a call behaves the same (the same threads, the same rounding)
    from whichever thread it is made, and never slows or changes the other threads of the process:
    torch's count is per thread, and the BLAS is limited through its per-thread setting where it
    has one (see :func:`_limit_blas`). Nested calls keep the outer call's setting, and the counts
    are restored on return.
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
        restore_blas = _limit_blas() if blas else None
        _state.limited = True
        try:
            return method(*args, **kwargs)
        finally:
            _state.limited = False
            if restore_blas is not None:
                restore_blas()
            if before != 1:
                torch.set_num_threads(before)

    return wrapper


def in_parallel(function, items):
    """``[function(item) for item in items]``, on as many threads as the BLAS may use (its own count:
    what ``OPENBLAS_NUM_THREADS`` or threadpoolctl set), with the BLAS on one thread meanwhile. For
    prediction's chunks: the products of one chunk are too small to share well between threads,
    whole chunks are not (about 1.4 × faster in float32 and 1.8 × in float64 on 2 cores,
    ``benchmarks/RESULTS.md``).

    The BLAS's limit is process-wide while any such call runs (the last one to finish restores it):
    OpenBLAS's per-thread setting, set from two threads at once, left every thread of the process on
    one core (OpenBLAS 0.3.31)."""
    items = list(items)
    workers = min(_blas_threads(), len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with _blas_on_one_thread(), concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


_parallel = {"calls": 0, "limiter": None}
_PARALLEL = threading.Lock()


@contextlib.contextmanager
def _blas_on_one_thread():
    """The BLAS on one thread, process-wide, while any caller is inside; restored by the last."""
    with _PARALLEL:
        if _parallel["calls"] == 0:
            if _parallel.get("controller") is None:  # finding the libraries takes milliseconds: once
                _parallel["controller"] = ThreadpoolController()
            _parallel["limiter"] = _parallel["controller"].limit(limits=1, user_api="blas")
        _parallel["calls"] += 1
    try:
        yield
    finally:
        with _PARALLEL:
            _parallel["calls"] -= 1
            if _parallel["calls"] == 0:
                _parallel["limiter"].restore_original_limits()


def _blas_threads():
    """The largest thread count among the loaded BLAS libraries that have a per-thread setting (1
    when none has: their threads cannot be limited per thread)."""
    global _libraries
    if _libraries is None:
        _libraries = [lib for lib in ThreadpoolController().lib_controllers if _setter(lib)]
    return max((lib.num_threads for lib in _libraries), default=1)


def _limit_blas():
    """Put every BLAS library that has a per-thread setting on one thread for the calling thread;
    return the function that restores them.

    threadpoolctl's limit is process-wide, and for OpenBLAS (the BLAS of numpy's wheels) it takes
    effect only from the first thread that sets it, usually the main one: a fit in a worker thread
    ran its BLAS on every core and rounded differently from the same fit in the main thread. So the
    limit goes through the per-thread settings instead: OpenBLAS's ``openblas_set_num_threads_local``
    (OpenBLAS 0.3.27 and later) and MKL's ``mkl_set_num_threads_local``. A BLAS without one (an
    older OpenBLAS, BLIS) keeps its own setting in every thread.
    """
    restores = []
    for library in _blas():
        try:
            restores.append(library())
        except Exception:  # a BLAS that refuses: it keeps its setting, like one without the symbol
            continue
    return lambda: [restore() for restore in reversed(restores)]


def _blas():
    """For each loaded BLAS with a per-thread setting, a function that sets the calling thread's
    count to 1 and returns the function that restores it; found once (threadpoolctl takes
    milliseconds to find the libraries)."""
    global _controller
    if _controller is None:
        _controller = [setter for library in ThreadpoolController().lib_controllers for setter in _setter(library)]
    return _controller


def _setter(library):
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

            def set_one(local=local):
                before = local(1)  # the calling thread's own count before (0: it had none)
                return lambda: local(before)

            return [set_one]
    return []
