"""Make the C allocator hand large freed buffers back to the operating system.

A hostile request is refused after it has been received: gRPC core, protobuf and Python
each hold a copy of a multi-megabyte message for a moment. glibc serves such buffers from
mmap at first, but it raises its mmap threshold each time one is freed (up to 32 MiB), so
later large buffers come from the heap, whose freed top it keeps. Measured with
``scripts/bench/abuse.py --only task_turns`` (40 refused and accepted asks of 4-16 MB): the
node's RSS grew by ~180 MiB while the data it stored stayed within its 64 MiB budget. A
fixed threshold keeps large buffers on mmap, which returns them on free, so RSS follows
what is stored, not the largest request seen (issue 16).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt parameters from glibc's <malloc.h>."""

MMAP_THRESHOLD_BYTES = 256 * 1024
"""Buffers this large or larger are mmapped and go back to the OS when freed."""

TRIM_THRESHOLD_BYTES = 1024 * 1024
"""Free memory at the top of the heap beyond this is returned at once."""


def return_large_buffers_to_os() -> bool:
    """Fix glibc's mmap and trim thresholds; False (and nothing changed) off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))
    if not done:
        log.debug("mallopt refused the thresholds; large freed buffers may stay in the heap")
    return done
