"""Keep allocators from holding on to freed chunk buffers, so peak RSS follows the chunk size.

Arrow's default allocator here, mimalloc, kept ~50 MB more resident than jemalloc for the same run of
the worker at the same speed (`make bench-worker`, 400 MB file), so the worker switches Arrow to
jemalloc where the pyarrow build has it. glibc serves a large `malloc` with `mmap` and gives it back on `free`, but after such a free it raises
its mmap threshold (up to 32 MiB), so later chunk-sized buffers come from the heap and their pages stay
in RSS after they are freed. Fixing the threshold at 1 MiB keeps every block-sized buffer mmapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import pyarrow as pa

log = logging.getLogger("crawljob_worker")

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 1 << 20


def bound_malloc_retention() -> bool:
    """Fix glibc's mmap threshold (True), or leave another C library alone (False)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    log.debug("glibc mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, done)
    return done


def use_jemalloc() -> bool:
    """Make jemalloc Arrow's default memory pool when this pyarrow build has it."""
    try:
        pool = pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return False
    pa.set_memory_pool(pool)
    return True
