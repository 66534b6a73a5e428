"""Process memory: resident size, and handing freed heap pages back to the system."""

from __future__ import annotations

import ctypes
import os
from typing import Any


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc``; 0 where that is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _libc_malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_memory() -> None:
    """Give the pages freed by a batch's temporary arrays back to the system (glibc ``malloc_trim``).

    A large batch allocates tens of megabytes of short-lived arrays in the core's malloc arena; glibc
    keeps freed arena memory resident, so the worker's RSS would track its largest batch, not its state.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
