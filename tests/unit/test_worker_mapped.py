"""A local file read through a memory map: blocks in place, pages released once parsed (mapped.py)."""

from __future__ import annotations

import mmap
from pathlib import Path

from crawljob_worker.blocks import count_byte
from crawljob_worker.mapped import mapped_blocks, release_span
from crawljob_worker.source import FileStream


def test_release_span_keeps_the_page_holding_the_next_block() -> None:
    page = mmap.PAGESIZE
    assert release_span(0, 10) == (0, 0)
    assert release_span(0, 3 * page + 5) == (0, 3 * page)
    assert release_span(3 * page, 3 * page + 5) == (3 * page, 3 * page)
    assert release_span(3 * page, 7 * page) == (3 * page, 7 * page)


def _resident_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_mapped_blocks_hold_one_block_of_the_file_resident(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    row = b'2026-01-01T00:00:00,dev-12345,21.5,"quoted, text"\n'
    with source.open("wb") as handle:
        for _ in range(128):
            handle.write(row * ((1 << 20) // len(row)))  # ~1 MiB of rows
    stream = FileStream(str(source))
    before = _resident_file_kib()
    peak = 0
    total = rows = 0
    try:
        for block in mapped_blocks(stream, 1 << 20, b'"'):
            rows += count_byte(block.data, b"\n")  # touches every page of the block
            total += len(block.data)
            assert stream.offset == block.end
            peak = max(peak, _resident_file_kib() - before)
    finally:
        stream.close()
    assert total == source.stat().st_size
    assert rows == source.read_bytes().count(b"\n")
    # 128 MiB went through; without MADV_DONTNEED all of it would stay resident.
    assert peak < 8 * 1024, f"{peak} KiB of the file resident"
