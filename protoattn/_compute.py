"""Where torch computes: the device, and how many CPU threads a call may use."""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor

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


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``; on the CPU, when neither autograd nor a tracer records it, through numpy's BLAS.

    torch's CPU wheels multiply with MKL, which on AMD processors runs the products here (many rows
    by ~100 prototypes, or by ~10 classes) 2.5-10 times slower than the OpenBLAS that numpy ships
    (measured in ``benchmarks/speed.py``). The numpy arrays share the tensors' memory: nothing is copied.
    """
    if (
        not a.is_cpu
        or ((a.requires_grad or b.requires_grad) and torch.is_grad_enabled())
        or torch.compiler.is_compiling()  # traced, as by the ONNX export: the graph needs torch's
    ):
        return a @ b
    with np.errstate(all="ignore"):  # like torch's: NaN and infinity propagate without a warning
        return torch.from_numpy(np.matmul(_numpy(a), _numpy(b)))


def _numpy(t: Tensor) -> np.ndarray:
    # A parameter outside autograd needs detaching first; other tensors need not (a few µs a call).
    return (t.detach() if t.requires_grad else t).numpy()


def limit_threads(method=None, *, blas=False):
    """Run ``method`` with torch computing on one thread in the calling thread; with ``blas=True``
    (training) numpy's BLAS too.

    The work here is many small operations (a training step is a batch of rows against the
    prototypes; prediction goes through cache-sized row chunks), and the products go through
    numpy's BLAS (see :func:`matmul`), which runs its own threads. A second torch thread inside
    each small operation saves little, and torch's OpenMP threads spinning for the cores the BLAS's
    threads want made a fit 40-50 times slower on a 2-core machine (``benchmarks/speed.py``). So a
    call sets torch's count to 1 in its own thread (torch's count is per thread) and restores it on
    return. Calls running at once from several threads (joblib's threading backend, a Dask worker's
    threads) thus never oversubscribe the cores with torch threads. Nested calls keep the outer
    call's setting.

    The BLAS keeps the threads it is given (``OPENBLAS_NUM_THREADS``, threadpoolctl, joblib's limits
    in its workers), except in training: a step's products (a batch by the prototypes) are too small
    to share, and the BLAS's idle threads spinning beside the step made it a third slower; so
    ``blas=True`` limits it to one thread through threadpoolctl for the call. (numpy's OpenBLAS takes
    that limit only from the main thread; elsewhere training keeps the BLAS's threads.) Prediction
    leaves it alone, so that predictions do not depend on the thread they are made from.
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
