"""Cutting a stream into record-aligned blocks: quotes, CRLF, BOM, line numbers."""

import io
from concurrent.futures import ThreadPoolExecutor

import pytest

from crawljob_worker.blocks import (
    Block,
    count_byte,
    first_record_end,
    iter_blocks,
    iter_buffer_blocks,
    last_record_end,
)
from crawljob_worker.errors import WorkerError


def test_last_record_end_skips_newlines_inside_quotes() -> None:
    data = b'a,b\n1,"x\ny"\n2,"open\n'
    assert last_record_end(data, b'"') == len(b'a,b\n1,"x\ny"\n')


def test_last_record_end_without_quoting_takes_the_last_newline() -> None:
    assert last_record_end(b'a,"b\nc', None) == 5
    assert last_record_end(b"no newline", b'"') == 0


def test_first_record_end_spans_a_quoted_newline() -> None:
    data = b'"head\ner",b\n1,2\n'
    assert first_record_end(data, b'"') == len(b'"head\ner",b\n')
    assert first_record_end(b"abc", b'"') == 0


def _blocks(data: bytes, chunk: int) -> list[tuple[bytes, int]]:
    return [(block.data, block.first_line) for block in iter_blocks(io.BytesIO(data), chunk, b'"')]


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 1000])
def test_blocks_reassemble_the_stream_and_number_their_lines(chunk: int) -> None:
    data = b'h1,h2\r\n1,"a\r\nb"\r\n2,"c,""d"""\r\n3,x\r\n4,y'
    blocks = _blocks(data, chunk)
    assert b"".join(block for block, _ in blocks) == data
    for block, first_line in blocks:
        assert first_line == data[: data.index(block)].count(b"\n") + 1 if block else True
        assert block.count(b'"') % 2 == 0


def test_a_utf8_bom_is_dropped() -> None:
    assert _blocks(b"\xef\xbb\xbfa,b\n1,2\n", 100) == [(b"a,b\n1,2\n", 1)]


def test_an_unclosed_quote_is_refused_instead_of_buffered_forever() -> None:
    stream = io.BytesIO(b'a,"never closed\n' + b"x" * 5000)
    with pytest.raises(WorkerError) as caught:
        list(iter_blocks(stream, 100, b'"', max_record_bytes=1000))
    assert caught.value.code == 3
    assert "line 1" in caught.value.message


@pytest.mark.parametrize("size", [10, (1 << 16) + 3, (3 << 20) + 12345])
def test_count_byte_counts_across_its_scratch_slices(size: int) -> None:
    data = bytearray((b'ab"\n' * (size // 4 + 1))[:size])
    data[-1:] = b'"'  # one in the last, partial slice
    for byte in (b'"', b"\n", b"z"):
        assert count_byte(data, byte) == data.count(byte)


def test_count_byte_is_exact_in_two_threads_at_once() -> None:
    blocks = [bytes([index % 250]) * ((2 << 20) + index) for index in range(8)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda block: count_byte(block, block[:1]), blocks * 4))
    assert counts == [len(block) for block in blocks] * 4


def _buffer_blocks(data: bytes, chunk: int, limit: int | None = None) -> list[Block]:
    with memoryview(data) as view:
        return [
            Block(bytes(block.data), block.first_line, block.newlines, block.end)
            for block in iter_buffer_blocks(data, view, chunk, b'"', limit)
        ]


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 1000])
@pytest.mark.parametrize("tail", [b"4,y", b"4,y\r\n"])
def test_buffer_blocks_cut_in_place_at_record_boundaries(chunk: int, tail: bytes) -> None:
    data = b'h1,h2\r\n1,"a\r\nb"\r\n2,"c,""d"""\r\n3,x\r\n' + tail
    blocks = _buffer_blocks(data, chunk)
    assert b"".join(bytes(block.data) for block in blocks) == data
    position = 0
    for block in blocks:
        position += len(block.data)
        assert block.end == position
        assert block.first_line == data[: position - len(block.data)].count(b"\n") + 1
        assert block.newlines == bytes(block.data).count(b"\n")
        assert bytes(block.data).count(b'"') % 2 == 0  # never cut inside a quoted field
    assert len(blocks) == 1 if chunk == 1000 else len(blocks) > 1


def test_buffer_blocks_are_views_of_the_buffer_not_copies() -> None:
    data = bytearray(b"a,b\n1,2\n3,4\n")
    with memoryview(data) as view:
        first = next(iter_buffer_blocks(bytes(data), view, 5, b'"'))
        assert isinstance(first.data, memoryview)
        data[0:1] = b"z"  # same length: the view sees the change
        assert bytes(first.data) == b"z,b\n"
        first.data.release()


def test_buffer_blocks_drop_a_bom_and_refuse_an_unclosed_quote() -> None:
    assert [(bytes(b.data), b.first_line) for b in _buffer_blocks(b"\xef\xbb\xbfa,b\n1,2\n", 100)] == [
        (b"a,b\n1,2\n", 1)
    ]
    with pytest.raises(WorkerError) as caught:
        _buffer_blocks(b'a,b\n1,"never closed\n' + b"x" * 5000, 100, limit=1000)
    assert caught.value.code == 3
    assert "line 2" in caught.value.message
