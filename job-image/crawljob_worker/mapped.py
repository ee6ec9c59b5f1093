"""A local, uncompressed source read through a memory map: blocks are views of the file's pages.

Reading a file into blocks costs, per 8 MiB block, a fresh bytearray (allocated and zero-filled by
the kernel), a copy from the page cache into it and the cut at the last record boundary. Mapped,
the parser reads the page cache in place: no allocation, no copy. Pages of a block are released
(`MADV_DONTNEED`) as soon as the parser asks for the next block, so resident memory stays at about
one block, however large the file. That is safe even if something still pointed into them: a
released page of a file mapping is read back from the file on the next touch.
"""

from __future__ import annotations

import mmap
from collections.abc import Generator
from contextlib import suppress

from crawljob_worker.blocks import Block, iter_buffer_blocks
from crawljob_worker.source import FileStream

PAGE = mmap.PAGESIZE


def release_span(done: int, end: int) -> tuple[int, int]:
    """The page-aligned span [start, stop) of bytes [*done*, *end*) that can be released: whole
    pages only, so the page holding the next block's first bytes stays (pure)."""
    start = done - done % PAGE
    stop = end - end % PAGE
    return start, max(start, stop)


def mapped_blocks(
    stream: FileStream, chunk_bytes: int, quote: bytes | None, max_record_bytes: int | None = None
) -> Generator[Block, None, None]:
    """Blocks of the mapped file of *stream* (`iter_buffer_blocks`); `stream.offset` follows the
    blocks handed out, for progress. The file must not be empty (an empty file cannot be mapped)."""
    mapping = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    released = 0
    try:
        with memoryview(mapping) as view:
            for block in iter_buffer_blocks(mapping, view, chunk_bytes, quote, max_record_bytes):
                assert block.end is not None
                stream.offset = block.end
                yield block
                start, stop = release_span(released, block.end)
                if stop > start:
                    mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)
                    released = stop
                del block
    finally:
        # A block still referenced elsewhere (an exception's traceback) keeps the map exported;
        # it is then unmapped when the last reference goes.
        with suppress(BufferError):
            mapping.close()
