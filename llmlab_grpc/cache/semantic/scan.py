"""The semantic index's compact first pass: each row as int8 codes with one float32 scale.

A lookup's scan of 10k float32 rows (15 MB) is bound by memory bandwidth on the 2-core
machine (1.1-1.9 ms, the embedding having just run through the caches); as int8 codes the
same rows are 3.9 MB. ``Int8Scan`` calls the engine build's ``llmlab_scan_i8`` (``csrc/scan.c``)
through ctypes; the index then re-scores in float32 every row the first pass cannot rule out
(``error_bound``), so a search returns what a float32 scan returns. ``reference_scan`` is the
same arithmetic in numpy (tests compare the two).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt

ROUNDING = 1e-4
"""Added to the quantization bound for float rounding: both passes sum 384 products of two unit
vectors in float32 (each off by at most ~384 x 6e-8 of the sum of |products| <= 1)."""


def quantize(vector: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int8], float]:
    """``vector`` as int8 codes and the scale that maps them back (``codes * scale``): each value is
    then within ``scale / 2`` of its float32 one."""
    top = float(np.max(np.abs(vector)))
    scale = top / 127.0 if top > 0 else 1.0
    codes = np.clip(np.rint(vector / scale), -127, 127).astype(np.int8)
    return codes, scale


def error_bound(query: npt.NDArray[np.float32], largest_scale: float) -> float:
    """How far a first-pass similarity may be from the float32 one, for every row whose scale is
    at most ``largest_scale``: each code is within half a scale of its value, so the dot product
    with ``query`` moves by at most ``scale / 2 * sum |query|``."""
    return largest_scale / 2 * float(np.abs(query).sum()) + ROUNDING * max(1.0, float(np.linalg.norm(query)))


def reference_scan(codes: npt.NDArray[np.int8], scales: npt.NDArray[np.float32], sigs: npt.NDArray[np.int64],
                   want: int | None, n: int, query: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
    """What ``llmlab_scan_i8`` computes, in numpy: ``out[i]`` is row ``i``'s approximate similarity,
    or -inf for a row whose signature is not ``want`` (when given)."""
    np.multiply(codes[:n].astype(np.float32) @ query, scales[:n], out=out[:n])
    if want is not None:
        out[:n][sigs[:n] != want] = -np.inf


class Int8Scan:
    """The engine build's ``llmlab_scan_i8``; ``of(lib)`` is None for an engine without it (the wheel's)."""

    def __init__(self, fn: Any) -> None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        fn.restype = None
        fn.argtypes = [p, p, p, i64, ctypes.c_int, i64, ctypes.c_int, p, p]
        self._fn = fn

    @classmethod
    def of(cls, lib: Any) -> Int8Scan | None:
        fn = getattr(lib, "llmlab_scan_i8", None)
        return cls(fn) if fn is not None else None

    def __call__(self, codes: npt.NDArray[np.int8], scales: npt.NDArray[np.float32], sigs: npt.NDArray[np.int64],
                 want: int | None, n: int, query: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
        """Fill ``out[:n]`` as ``reference_scan`` does. The arrays must be C-contiguous of these dtypes,
        with at least ``n`` rows (the index's own buffers are); ``query`` has the rows' width."""
        if not (codes.flags.c_contiguous and codes.dtype == np.int8 and scales.dtype == np.float32
                and scales.flags.c_contiguous and sigs.dtype == np.int64 and sigs.flags.c_contiguous
                and query.dtype == np.float32 and query.flags.c_contiguous
                and out.dtype == np.float32 and out.flags.c_contiguous and codes.ndim == 2
                and query.shape == (codes.shape[1],) and min(len(codes), len(scales), len(sigs), len(out)) >= n):
            raise ValueError("llmlab_scan_i8: arrays of the wrong type or size")
        self._fn(codes.ctypes.data, scales.ctypes.data, sigs.ctypes.data, 0 if want is None else want,
                 int(want is not None), n, codes.shape[1], query.ctypes.data, out.ctypes.data)
