"""Shepard's weights from the distance product in one compiled pass over a prediction chunk.

After the distance product, the weights ``1 / (eps + (‖s ∘ x‖² + ‖s ∘ k‖² - 2 (s² ∘ k)·x)^q)`` took
an X² copy, a matrix-vector product and seven torch passes over each (rows, m) chunk: two broadcast
additions, four products for q = 10, the reciprocal. Each pass reads and writes the whole chunk,
which does not fit the L2 cache. This kernel takes a row at a time (a few hundred bytes, in the L1
cache) through the same operations, with loops that LLVM vectorises: 13-25 % of ``predict_proba``'s
time on ``benchmarks/speed.py`` (``benchmarks/RESULTS.md``). numba is imported at the first call
(half a second), compiles the kernel at its first use per dtype (under a second) and caches the
machine code on disk for later processes.
"""

from __future__ import annotations

import numba
import numpy as np


def shepard_weights_(products, X, sq_scales, key_norms, eps_term, q: int, floor=None):
    """Overwrite ``products`` (the (n, m) array of ``-2 (s² ∘ k)·x``) with ``1 / (eps_term + max(z,
    floor)^q)`` for ``z = products + key_norms + ‖s ∘ x‖²`` (with ``sq_scales = s²``), by the squarings
    of :func:`protoattn._shepard.raise_` (their products associated otherwise when q has three or
    more bits set); ``floor`` None: no floor. For a whole ``1 <= q <= 64`` and numpy arrays of one
    float dtype (C-contiguous ones are fastest). Returns ``products``."""
    dtype = products.dtype.type
    clip = floor is not None
    _weights(products, X, sq_scales, key_norms, dtype(eps_term), dtype(1), int(q), dtype(floor if clip else 0), clip)
    return products


def _jit(**options):
    """``numba.njit`` with numba's cache on disk, or without it where numba finds no writable place
    for one (a read-only installation and home directory), where each process compiles at first use."""

    def decorate(function):
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(**options)(function)

    return decorate


@_jit(nogil=True, fastmath={"reassoc", "contract"})  # a sum in any order: vectorised
def _squared_norm(x, sq_scales):
    total = x.dtype.type(0)
    for j in range(len(x)):
        total += sq_scales[j] * x[j] * x[j]
    return total


@_jit(nogil=True, error_model="numpy")  # numpy's division (no zero check): vectorised
def _weights(r, X, sq_scales, key_norms, eps, one, q, floor, clip):
    n, m = r.shape
    acc = np.empty(m, dtype=r.dtype)
    for i in range(n):
        row = r[i]
        a = _squared_norm(X[i], sq_scales)  # the row is in the cache from the distance product
        for j in range(m):
            row[j] = row[j] + key_norms[j] + a
        if clip:
            for j in range(m):
                row[j] = max(row[j], floor)
        # row^q by squaring from the lowest bit of q, as raise_ recurses: x^10 = x² · (x⁴)², and the
        # last product shares its loop with eps and the reciprocal.
        e, started = q, False
        while True:
            if e & 1:
                if e == 1:
                    if started:
                        for j in range(m):
                            row[j] = one / (eps + acc[j] * row[j])
                    else:
                        for j in range(m):
                            row[j] = one / (eps + row[j])
                    break
                if started:
                    for j in range(m):
                        acc[j] *= row[j]
                else:
                    for j in range(m):
                        acc[j] = row[j]
                    started = True
            e >>= 1
            for j in range(m):
                row[j] *= row[j]
    return r
