"""Handing freed memory back to the system.

glibc keeps freed heap pages (a 45 MB checkpoint read, a 13-model comparison's temporaries) in its arenas, so
the server's RSS only grows even when nothing is referenced any more. ``malloc_trim(0)`` returns them; it is a
no-op where glibc is not the allocator.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache


@lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


def trim(collect: bool = False) -> bool:
    """Return free heap pages to the system (after a full garbage collection when ``collect``)."""
    if collect:
        gc.collect()
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True
