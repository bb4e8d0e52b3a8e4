"""Returning freed memory to the operating system between batches.

glibc's allocator keeps freed heap memory (and raises its mmap threshold after large frees), so a
long loop of same-sized batches creeps upwards in resident memory although nothing is kept: the
peak then grows with the number of batches, i.e. with the number of subjects. ``trim()`` after a
batch hands the free pages back (``malloc_trim(0)``, microseconds to a few ms); elsewhere it does
nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_LIBC = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
        _LIBC = None


def trim() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
