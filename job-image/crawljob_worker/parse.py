"""Record-aligned blocks → Arrow tables with a stable schema, plus the rejected rows (pure, no I/O).

Fast path: `pandas.read_csv(engine="pyarrow", dtype_backend="pyarrow")` parses the whole block with
pyarrow's multithreaded CSV reader, and `pa.Table.from_pandas` hands its Arrow-backed columns on
without a copy. When the block holds a bad row (wrong field count, a value that does not fit its
column's type, bytes not valid in the encoding), the block is re-read record by record with the `csv`
module, which knows each record's physical line number; good rows are kept, bad rows become rejects
with their line and reason. Clean blocks never pay for the slow path.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from crawljob_worker.blocks import Block, count_byte, first_record_end, last_record_end
from crawljob_worker.errors import bad_input
from crawljob_worker.schema import check_dtypes_cover, generated_names, stable_type, unique_names

Bytes = bytes | bytearray | memoryview  # a memoryview: a block of a mapped file (mapped.py)
NULL_VALUES = tuple(pacsv.ConvertOptions().null_values)
BINARY_PROBE_BYTES = 64 * 1024
# Above this share of undecodable records in the first block the file is not text in that encoding.
MAX_UNDECODABLE_SHARE = 0.1
MAX_REJECT_TEXT = 2000
# pandas' pyarrow engine reads with pyarrow's default block size and cannot turn on
# `newlines_in_values`: pyarrow then cuts its blocks at any newline, also one inside quotes, and either
# raises "out of sync" or silently drops or splits that record. An input smaller than one block is
# parsed exactly.
PYARROW_BLOCK_BYTES = 1 << 20
# Quote characters for a dialect without quoting (pandas' pyarrow engine always quotes): the first
# one absent from the block makes quoting a no-op there.
SUBSTITUTE_QUOTES = tuple(chr(code) for code in (1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 16, 17))
OUT_OF_SYNC = "out of sync with chunker"
READ_ERRORS = (ValueError, TypeError, pa.ArrowException, UnicodeError)


@dataclass(frozen=True)
class Dialect:
    delimiter: str = ","
    quote: str | None = '"'
    encoding: str = "utf-8"
    header: bool = True

    @property
    def quote_bytes(self) -> bytes | None:
        return self.quote.encode(self.encoding) if self.quote is not None else None


@dataclass(frozen=True)
class Reject:
    """A source record that was not written: its physical line, why, and its text."""

    line: int
    reason: str
    record: str


@dataclass
class Parsed:
    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return int(self.table.num_rows) + len(self.rejects)


def _clip(text: str) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= MAX_REJECT_TEXT else text[:MAX_REJECT_TEXT] + "…"


def _split_lines(text: str) -> list[str]:
    """Physical lines (split on \\n only, ends kept), matching the byte-level line count."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _has_surrogates(value: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in value)


class BlockParser:
    """Parses the blocks of one source in order; the first block fixes the column names and types."""

    def __init__(self, dialect: Dialect, dtypes: Mapping[str, pa.DataType] | None = None) -> None:
        self.dialect = dialect
        self.dtypes = dict(dtypes or {})
        self.names: list[str] | None = None
        self.schema: pa.Schema | None = None

    # ---- public -------------------------------------------------------------------------------
    def parse(self, block: Block) -> Parsed:
        """Good rows of *block* as a table of the fixed schema, and its rejects."""
        data, first_line = block.data, block.first_line
        if self.names is None:
            data = _contiguous(data)  # the header and the binary probes search it
            if _blank(data):
                return Parsed(pa.table({}))
            data, first_line = self._read_header(data, first_line)
        if _blank(data):
            return Parsed(self.empty_table())
        newlines = block.newlines if data is block.data and block.newlines is not None else None
        table = self._fast(data, count_byte(data, b"\n") if newlines is None else newlines)
        if table is not None:
            return Parsed(table)
        return self._slow(data, first_line)

    def empty_table(self) -> pa.Table:
        """A table with no rows and the columns known so far (all strings unless typed)."""
        if self.schema is None:
            names = self.names or []
            self.schema = pa.schema([(name, self.dtypes.get(name, pa.string())) for name in names])
        return self.schema.empty_table()

    # ---- header -------------------------------------------------------------------------------
    def _read_header(self, data: bytes | bytearray, first_line: int) -> tuple[Bytes, int]:
        if b"\x00" in data[:BINARY_PROBE_BYTES]:
            hint = " (UTF-16 text? transcode it to UTF-8)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
            raise bad_input(f"the source holds binary data (NUL bytes), not CSV text{hint}")
        end = first_record_end(data, self.dialect.quote_bytes) or len(data)
        record = data[:end]
        try:
            text = record.decode(self.dialect.encoding)
        except UnicodeDecodeError as error:
            raise bad_input(
                f"line {first_line} is not valid {self.dialect.encoding} text ({error.reason} at byte "
                f"{error.start}): binary data or another encoding (set --encoding)"
            ) from None
        fields = next(csv.reader([text], **self._csv_format()), [])
        if self.dialect.header:
            self.names = unique_names(fields)
            data, first_line = data[end:], first_line + record.count(b"\n")
        else:
            self.names = generated_names(len(fields))
        check_dtypes_cover(self.dtypes, self.names)
        return data, first_line

    def _csv_format(self) -> dict[str, Any]:
        quote = self.dialect.quote
        if quote is None:
            return {"delimiter": self.dialect.delimiter, "quoting": csv.QUOTE_NONE}
        return {"delimiter": self.dialect.delimiter, "quotechar": quote, "doublequote": True}

    # ---- fast path ----------------------------------------------------------------------------
    def _quote_for(self, data: Bytes) -> str | None:
        """The quote character pandas should use for *data* (None: no usable one, take the slow path)."""
        if self.dialect.quote is not None:
            return self.dialect.quote
        encoding = self.dialect.encoding
        haystack = _contiguous(data)
        return next((char for char in SUBSTITUTE_QUOTES if char.encode(encoding) not in haystack), None)

    def _read_dtypes(self) -> dict[str, pa.DataType]:
        """The dtypes pandas applies: the explicit ones; after the first block, the explicit text
        columns only. The other columns are inferred and cast to the schema after: the same safe
        Arrow cast pandas' `astype` would do, without its per-column cost (~0.25 s per 800 MB when
        every text column went through `astype`). An inferred text column that comes back as
        something else (`007` read as 7) has its block re-read with the text columns typed."""
        if self.schema is None:
            return self.dtypes
        return {name: kind for name, kind in self.dtypes.items() if pa.types.is_string(kind)}

    def _text_dtypes(self) -> dict[str, pa.DataType]:
        assert self.schema is not None
        return {f.name: f.type for f in self.schema if pa.types.is_string(f.type)}

    def _misread_text(self, table: pa.Table) -> bool:
        """A text column of the schema that inference turned into another type in *table*."""
        assert self.schema is not None
        return any(
            pa.types.is_string(f.type) and not pa.types.is_string(table.schema.field(f.name).type)
            for f in self.schema
        )

    def _fast(self, data: Bytes, newlines: int) -> pa.Table | None:
        """The block parsed through pandas, or None when it holds anything bad (then the slow path runs)."""
        assert self.names is not None
        quote = self._quote_for(data)
        if quote is None:
            return None
        reader = PandasBlockReader(self.names, self.dialect.delimiter, quote, self.dialect.encoding)
        try:
            table = reader.read(data, self._read_dtypes(), self.dialect.quote_bytes, newlines)
            if table is not None and self.schema is not None and self._misread_text(table):
                table = reader.read(data, self._text_dtypes(), self.dialect.quote_bytes, newlines)
        except READ_ERRORS:
            return None
        if table is None:
            return None
        if self.schema is None:
            if any(pa.types.is_binary(f.type) for f in table.schema):
                return None  # bytes not valid in the encoding: the slow path rejects those rows
            self.schema = pa.schema([(f.name, stable_type(f.type)) for f in table.schema])
        if table.schema.equals(self.schema):
            return table
        try:
            return table.cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    # ---- slow path ----------------------------------------------------------------------------
    def _records(self, data: Bytes, first_line: int) -> tuple[list[tuple[int, list[str]]], list[Reject]]:
        """Every record with its line number, split exactly; wrong field counts and undecodable
        records are already rejected."""
        assert self.names is not None
        expected = len(self.names)
        text = str(data, self.dialect.encoding, errors="surrogateescape")
        lines = _split_lines(text)
        reader = csv.reader(iter(lines), **self._csv_format())
        good: list[tuple[int, list[str]]] = []
        rejects: list[Reject] = []
        consumed = 0
        while True:
            start = consumed
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                consumed = reader.line_num
                raw = "".join(lines[start:consumed])
                rejects.append(
                    Reject(first_line + start, f"malformed record: {error}", _clip(_printable(raw)))
                )
                continue
            consumed = reader.line_num
            if not fields:
                continue
            raw = "".join(lines[start:consumed])
            line = first_line + start
            if _has_surrogates(raw):
                reason = f"undecodable bytes (not valid {self.dialect.encoding})"
                rejects.append(Reject(line, reason, _clip(_printable(raw))))
            elif len(fields) != expected:
                reason = f"expected {expected} fields, found {len(fields)}"
                rejects.append(Reject(line, reason, _clip(raw)))
            else:
                good.append((line, fields))
        return good, rejects

    def _infer_schema(self, rows: Sequence[list[str]]) -> pa.Schema:
        """Types of the first block from its good rows (explicit dtypes kept as given)."""
        assert self.names is not None
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        typed_as_text = dict.fromkeys(self.dtypes, pa.string())
        text = buffer.getvalue().encode("utf-8")
        table = PandasBlockReader(self.names, ",", '"', "utf-8").read(
            text, typed_as_text, b'"', count_byte(text, b"\n")
        )
        assert table is not None, "rows the csv module split are well-formed"
        return pa.schema(
            [
                (f.name, self.dtypes[f.name] if f.name in self.dtypes else stable_type(f.type))
                for f in table.schema
            ]
        )

    def _slow(self, data: Bytes, first_line: int) -> Parsed:
        assert self.names is not None
        good, rejects = self._records(data, first_line)
        if self.schema is None:
            self._refuse_non_text(good, rejects)
            if not good:
                return Parsed(self.empty_table(), rejects)
            self.schema = self._infer_schema([fields for _, fields in good])
        schema = self.schema
        columns = (
            list(zip(*(fields for _, fields in good), strict=True)) if good else [() for _ in self.names]
        )
        bad_rows: dict[int, str] = {}
        arrays: list[pa.Array] = []
        for name, kind, values in zip(schema.names, schema.types, columns, strict=True):
            array, failures = _convert(values, kind)
            arrays.append(array)
            for index, value in failures:
                bad_rows.setdefault(index, f"column {name!r}: cannot read {value!r} as {kind}")
        table = pa.Table.from_arrays(arrays, schema=schema)
        if bad_rows:
            keep = pa.array([index not in bad_rows for index in range(len(good))], pa.bool_())
            table = table.filter(keep)
            for index, reason in bad_rows.items():
                line, fields = good[index]
                rejects.append(Reject(line, reason, _clip(_join(fields, self._csv_format()))))
            rejects.sort(key=lambda reject: reject.line)
        return Parsed(table, rejects)

    def _refuse_non_text(self, good: Sequence[Any], rejects: Sequence[Reject]) -> None:
        undecodable = sum(1 for reject in rejects if reject.reason.startswith("undecodable"))
        total = len(good) + len(rejects)
        if total and undecodable / total > MAX_UNDECODABLE_SHARE:
            raise bad_input(
                f"{undecodable} of the first {total} records are not valid {self.dialect.encoding} text: "
                "binary data or another encoding (set --encoding)"
            )


class PandasBlockReader:
    """One block of whole records → an Arrow table via `pandas.read_csv(engine="pyarrow")`.

    The block has no header line. pandas' pyarrow engine, given `names=` and `header=None`, lets
    pyarrow name the columns `f0, f1, …` (pyarrow's documented auto-generated names) and passes
    `dtype` on to pyarrow under the names it was given: with real names, pyarrow would not find the
    columns, and a `string` column such as `007` would be read as the number 7. So the columns are
    read as `f0, f1, …` and renamed after, which keeps the block zero-copy (no header put in front).
    """

    def __init__(self, names: Sequence[str], delimiter: str, quote: str, encoding: str) -> None:
        self.names = list(names)
        self.read_names = [f"f{index}" for index in range(len(self.names))]
        self._read_name = dict(zip(self.names, self.read_names, strict=True))
        self.delimiter = delimiter
        self.quote = quote
        self.encoding = encoding

    def read(
        self, data: Bytes, dtypes: Mapping[str, pa.DataType], piece_quote: bytes | None, newlines: int
    ) -> pa.Table | None:
        """The rows of *data* (holding *newlines* line ends) typed as *dtypes*, others inferred; None
        if any row has the wrong field count. String columns keep their text exactly."""
        lines = newlines + (1 if len(data) and data[-1:] != b"\n" else 0)
        whole = piece_quote is None or len(data) < PYARROW_BLOCK_BYTES
        try:
            table, invalid = self._read_exact(data, dtypes)
        except ValueError as error:
            if whole or OUT_OF_SYNC not in str(error):
                raise
        else:
            if whole or (not invalid and table.num_rows == lines):
                return None if invalid else table
            if invalid and table.num_rows + invalid == lines:
                return None  # bad rows, each on its own line: the slow path finds them
        # Fewer rows than lines: blank lines, or quoted newlines, and pyarrow may have cut its
        # blocks inside one (it then raises "out of sync", or silently drops or splits a record).
        # Parse pieces that each fit in one pyarrow block, cut at record boundaries (quote
        # parity), where quoted newlines are exact, and join them.
        tables: list[pa.Table] = []
        for piece in self._pieces(_contiguous(data), piece_quote):
            table, invalid = self._read_exact(piece, dtypes)
            if invalid:
                return None
            tables.append(table)
        return pa.concat_tables(tables, promote_options="permissive")

    def _pieces(self, data: bytes | bytearray, quote: bytes | None) -> list[Bytes]:
        size = PYARROW_BLOCK_BYTES - 1
        pieces: list[Bytes] = []
        start = 0
        while len(data) - start > size:
            window = data[start : start + size]
            end = last_record_end(window, quote)
            if end == 0:  # one record longer than a pyarrow block: hand the rest over whole
                break
            pieces.append(window[:end])
            start += end
        pieces.append(data[start:])
        return pieces

    def _read_exact(self, data: Bytes, dtypes: Mapping[str, pa.DataType]) -> tuple[pa.Table, int]:
        table, invalid = self._read(data, dtypes)
        if invalid:
            return table, invalid
        # pandas makes every null marker in a string column null (pyarrow's `strings_can_be_null`
        # follows "" being a marker); those columns are re-read with no markers to keep the text.
        text = [
            f.name
            for f in table.schema
            if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
            and table.column(f.name).null_count
        ]
        if not text:
            return table, 0
        exact, invalid = self._read(data, dict.fromkeys(text, pa.string()), exact_text=True)
        if invalid or exact.num_rows != table.num_rows:
            return table, max(invalid, 1)
        for name in text:
            table = table.set_column(table.schema.get_field_index(name), name, exact.column(name))
        return table, 0

    def _read(
        self, data: Bytes, dtypes: Mapping[str, pa.DataType], exact_text: bool = False
    ) -> tuple[pa.Table, int]:
        """The good rows of *data* and how many rows had the wrong field count; with *exact_text*
        no value is a null marker."""
        invalid = 0

        def on_bad_line(_row: Any) -> str:
            nonlocal invalid
            invalid += 1
            return "skip"

        frame = pd.read_csv(
            # pyarrow parses the block's bytes in place (no copy, no Python-level file reads).
            pa.BufferReader(pa.py_buffer(data)),
            engine="pyarrow",
            dtype_backend="pyarrow",
            sep=self.delimiter,
            quotechar=self.quote,
            header=None,
            names=self.read_names,
            encoding=self.encoding,
            # None, not {}, when nothing is typed: pandas then skips its per-column dtype handling
            # (~0.1 CPU-s per 400 MB), with the same table.
            dtype={self._read_name[name]: pd.ArrowDtype(kind) for name, kind in dtypes.items()} or None,
            na_values=[] if exact_text else list(NULL_VALUES),
            keep_default_na=False,
            # pyarrow's invalid_row_handler (an InvalidRow → "skip"), which pandas-stubs does not know
            on_bad_lines=cast(Any, on_bad_line),
        )
        if not isinstance(frame.index, pd.RangeIndex):
            # pyarrow counts the columns in the block's first row; with more fields there than
            # names, pandas turns the extra leading ones into an index. Every row is then suspect.
            invalid = max(invalid, 1)
        # One thread: the columns are Arrow already (no conversion), a pool would only cost its start.
        table = pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)
        return table.rename_columns(self.names).replace_schema_metadata(None), invalid


def _blank(data: Bytes) -> bool:
    """Only line ends and spaces (checked without copying a large block)."""
    return len(data) < 4096 and not bytes(data).strip(b"\r\n \t")


def _contiguous(data: Bytes) -> bytes | bytearray:
    """*data* with the search methods of bytes: a view of a mapped file is copied, only on the paths
    that search a block (its header, `--quote none`, quoted newlines)."""
    return bytes(data) if isinstance(data, memoryview) else data


def _printable(raw: str) -> str:
    return raw.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _join(fields: Sequence[str], csv_format: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    try:
        csv.writer(buffer, lineterminator="", **csv_format).writerow(fields)
    except csv.Error:  # QUOTE_NONE cannot write a field holding the delimiter: show it as it came
        return str(csv_format["delimiter"]).join(fields)
    return buffer.getvalue()


@functools.cache
def _null_set() -> pa.Array:
    # Built on first use: pa.array() on a list imports pandas (~0.5 s), which clean files never need.
    return pa.array(NULL_VALUES, pa.string())


def _convert(values: Sequence[str], kind: pa.DataType) -> tuple[pa.Array, list[tuple[int, str]]]:
    """Strings → *kind* as the CSV reader converts them (null markers → null for non-strings);
    also the (row index, value) pairs that do not fit."""
    strings = pa.array(values, pa.string())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return strings.cast(kind), []
    nulls = pc.is_in(strings, value_set=_null_set())
    masked = pc.if_else(nulls, pa.scalar(None, pa.string()), strings)
    try:
        return masked.cast(kind), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    failures: list[tuple[int, str]] = []
    converted: list[Any] = []
    for index, value in enumerate(masked.to_pylist()):
        if value is None:
            converted.append(None)
            continue
        try:
            converted.append(pa.array([value], pa.string()).cast(kind)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            failures.append((index, value))
            converted.append(None)
    return pa.array(converted, kind), failures
