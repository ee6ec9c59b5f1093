"""Blocks → tables and rejects: dialects, exact line numbers, stable types (no I/O)."""

import pyarrow as pa
import pytest

from crawljob_worker.blocks import Block
from crawljob_worker.errors import WorkerError
from crawljob_worker.parse import BlockParser, Dialect


def parse_all(parser: BlockParser, *chunks: tuple[bytes, int]) -> tuple[pa.Table, list[tuple[int, str]]]:
    tables, rejects = [], []
    for data, first_line in chunks:
        parsed = parser.parse(Block(data, first_line))
        tables.append(parsed.table)
        rejects += [(reject.line, reject.reason) for reject in parsed.rejects]
    assert parser.schema is not None
    return pa.concat_tables([table for table in tables if table.num_columns]), rejects


def test_clean_block_keeps_quoted_delimiters_and_newlines() -> None:
    parser = BlockParser(Dialect())
    table, rejects = parse_all(parser, (b'id,text\r\n1,"a, b"\r\n2,"line\r\nbreak"\r\n3,"say ""hi"""\r\n', 1))
    assert rejects == []
    assert table.column("text").to_pylist() == ["a, b", "line\r\nbreak", 'say "hi"']
    assert table.column("id").type == pa.int64()


def test_wrong_field_counts_are_rejected_with_their_physical_line() -> None:
    parser = BlockParser(Dialect())
    data = b'a,b\n1,"x\ny"\n2\n3,4\n5,6,7\n'
    table, rejects = parse_all(parser, (data, 1))
    assert table.column("a").to_pylist() == [1, 3]
    assert rejects == [(4, "expected 2 fields, found 1"), (6, "expected 2 fields, found 3")]


def test_types_of_the_first_block_hold_for_later_blocks() -> None:
    parser = BlockParser(Dialect())
    parse_all(parser, (b"n,t\n1,2024-01-01T00:00:00\n", 1))
    table, rejects = parse_all(parser, (b"2,2024-01-01T00:00:00.250\nthree,2024-01-02T00:00:00\n", 3))
    assert parser.schema == pa.schema([("n", pa.int64()), ("t", pa.timestamp("us"))])
    assert table.column("n").to_pylist() == [2]
    assert rejects == [(4, "column 'n': cannot read 'three' as int64")]


def test_explicit_dtypes_win_over_inference() -> None:
    parser = BlockParser(Dialect(), {"code": pa.string(), "v": pa.float32()})
    table, _ = parse_all(parser, (b"code,v\n007,1\n", 1))
    assert table.schema == pa.schema([("code", pa.string()), ("v", pa.float32())])
    assert table.column("code").to_pylist() == ["007"]


def test_null_markers_are_nulls_in_typed_columns_but_text_in_strings() -> None:
    parser = BlockParser(Dialect(), {"s": pa.string(), "f": pa.float64()})
    table, rejects = parse_all(parser, (b"s,f\nNA,NA\n,\nx,bad\n", 1))
    assert table.column("s").to_pylist() == ["NA", ""]
    assert table.column("f").to_pylist() == [None, None]
    assert rejects == [(4, "column 'f': cannot read 'bad' as double")]


def test_undecodable_bytes_reject_only_their_row() -> None:
    parser = BlockParser(Dialect())
    rows = b"".join(b"%d,ok\n" % n for n in range(30))
    table, rejects = parse_all(parser, (b"a,b\n" + rows + b"99,caf\xe9\n", 1))
    assert table.num_rows == 30
    assert rejects == [(32, "undecodable bytes (not valid utf-8)")]


def test_other_encodings_and_delimiters() -> None:
    parser = BlockParser(Dialect(delimiter=";", encoding="latin-1"))
    table, rejects = parse_all(parser, ("name;n\ncafé;1\n".encode("latin-1"), 1))
    assert rejects == []
    assert table.column("name").to_pylist() == ["café"]


def test_no_header_names_columns() -> None:
    parser = BlockParser(Dialect(header=False))
    table, _ = parse_all(parser, (b"1,x\n2,y\n", 1))
    assert table.column_names == ["column_1", "column_2"]
    assert table.num_rows == 2


def test_header_only_has_a_schema_and_no_rows() -> None:
    parser = BlockParser(Dialect(), {"a": pa.int64()})
    parsed = parser.parse(Block(b"a,b\r\n", 1))
    assert parsed.table.num_rows == 0
    assert parser.empty_table().schema == pa.schema([("a", pa.int64()), ("b", pa.string())])


def test_binary_data_fails_fast() -> None:
    with pytest.raises(WorkerError) as caught:
        BlockParser(Dialect()).parse(Block(b"\x00\x01\x02garbage\n", 1))
    assert caught.value.code == 3


def test_mostly_undecodable_text_is_not_csv() -> None:
    data = b"a,b\n" + b"".join(b"\xff\xfe%d,\x80\n" % n for n in range(20))
    with pytest.raises(WorkerError) as caught:
        BlockParser(Dialect()).parse(Block(data, 1))
    assert caught.value.reason == "BadInput"


def test_without_quoting_quotes_are_data() -> None:
    parser = BlockParser(Dialect(delimiter="|", quote=None), {"n": pa.int64()})
    table, rejects = parse_all(parser, (b'n|text\n1|say "hi\n2|x\nthree|y\n', 1))
    assert table.column("text").to_pylist() == ['say "hi', "x"]
    assert rejects == [(4, "column 'n': cannot read 'three' as int64")]


def test_quoted_newlines_across_pyarrow_block_boundaries_parse_exactly() -> None:
    # Over 1 MiB: pandas' pyarrow engine cuts it where a newline sits inside quotes ("out of sync").
    rows = b"".join(b'%d,"first line\nsecond, line %d",%d.5\n' % (n, n, n) for n in range(60_000))
    assert len(rows) > 2 * (1 << 20)
    parser = BlockParser(Dialect())
    table, rejects = parse_all(parser, (b"id,text,x\n" + rows, 1))
    assert rejects == []
    assert table.num_rows == 60_000
    assert table.column("text")[59_999].as_py() == "first line\nsecond, line 59999"
    assert table.schema.types == [pa.int64(), pa.string(), pa.float64()]


def test_later_blocks_keep_string_text_exactly() -> None:
    parser = BlockParser(Dialect())
    parse_all(parser, (b"code,n\nA1,1\n", 1))
    table, rejects = parse_all(parser, (b"007,2\nNA,3\n,4\n", 3))
    assert rejects == []
    assert table.column("code").to_pylist() == ["007", "NA", ""]
    assert table.column("n").to_pylist() == [2, 3, 4]


@pytest.mark.parametrize(
    "later",
    [
        [b"true", b"false"],
        [b"2024-01-01", b"2024-01-02"],
        [b"2024-01-01T00:00:00", b"1.5"],
        [b"", b""],
        [b"1e3", b"-0"],
    ],
)
def test_text_columns_inferred_as_another_type_in_a_later_block_keep_their_text(
    later: list[bytes],
) -> None:
    parser = BlockParser(Dialect())
    parse_all(parser, (b"code,n\nA1,1\n", 1))
    table, rejects = parse_all(parser, (b"".join(b"%s,%d\n" % (text, n) for n, text in enumerate(later)), 3))
    assert rejects == []
    assert parser.schema == pa.schema([("code", pa.string()), ("n", pa.int64())])
    assert table.column("code").to_pylist() == [text.decode() for text in later]


def test_columns_typed_as_strings_are_not_read_as_numbers() -> None:
    parser = BlockParser(Dialect(header=False), {"column_1": pa.string()})
    table, _ = parse_all(parser, (b"007,1\n010,2\n", 1))
    assert table.column("column_1").to_pylist() == ["007", "010"]


def test_a_block_whose_rows_all_have_an_extra_field_is_rejected_not_shifted() -> None:
    parser = BlockParser(Dialect())
    parse_all(parser, (b"a,b\n1,2\n", 1))
    table, rejects = parse_all(parser, (b"3,4,\n5,6,\n", 3))
    assert table.num_rows == 0
    assert rejects == [(3, "expected 2 fields, found 3"), (4, "expected 2 fields, found 3")]


def test_a_block_starting_with_a_short_row_keeps_its_good_rows() -> None:
    parser = BlockParser(Dialect())
    parse_all(parser, (b"a,b\n1,2\n", 1))
    table, rejects = parse_all(parser, (b"3\n5,6\n7,8\n", 3))
    assert table.column("a").to_pylist() == [5, 7]
    assert rejects == [(3, "expected 2 fields, found 1")]
