"""Arrow's memory pool: jemalloc, so that freed chunk buffers do not pile up in RSS.

Arrow's default allocator here, mimalloc, kept ~30-50 MB more resident than jemalloc for the same run
of the worker at about the same CPU time (400 MB benchmark file, 2 cores), so the worker switches
Arrow to jemalloc where the pyarrow build has it. (Fixing glibc's mmap threshold saved ~10 MB more
but cost ~0.7 s of CPU in page faults per 400 MB, so it is not done.)
"""

from __future__ import annotations


def use_jemalloc() -> bool:
    """Make jemalloc Arrow's default memory pool when this pyarrow build has it."""
    import pyarrow as pa  # imported on the first call, after an S3 GET was sent (see `opening`)

    try:
        pool = pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return False
    pa.set_memory_pool(pool)
    return True
