"""Record-aligned shards of one CSV object, with speculative quote states (pure; docs/worker.md, "Shards").

The object is cut into N nominal ranges of S = ceil(size / N) bytes. Shard i owns the records that
*start* in [i*S, (i+1)*S) (Hadoop's input-split rule): it scans from byte i*S - 1 to the first record
end, owns everything from the byte after it, and reads past (i+1)*S - 1 to finish its last record.

A newline ends a record unless it is inside a quoted field, and whether byte i*S - 1 is inside quotes
depends on every quote before it, which shard i does not read. So each shard *assumes* a state at its
scan point and reports the state its own bytes lead to at the next shard's scan point. The assumption
is speculated from the shard's first 64 KiB (`speculate_quote_state`, as DuckDB's parallel reader
checks a candidate start from both states): under the wrong state every quote swaps its role, and an
opening quote lands after field text or a closing quote before it, which well-formed CSV never has;
the state with fewer such quotes wins, "outside" on a tie (no quotes in the window). Shard 0's assumption is exact (byte 0 is outside quotes); if every shard's
assumption equals its left neighbour's reported end state, every assumption is right by induction.
A disagreement names the shard to re-run with the right state (`first_mismatch`): never silently wrong
(Ge et al., "Speculative Distributed CSV Data Parsing for Big Data Analytics", SIGMOD 2019).

Line numbers: a shard counts the newlines it owns; shard i's first line is 1 + the newlines owned by
shards 0..i-1 (`line_bases`), which maps a shard's local reject line numbers onto the file's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crawljob_worker.blocks import UTF8_BOM, first_record_end

GZIP_MAGIC = b"\x1f\x8b"
# How much of a shard's first bytes the quote state is speculated from.
PROBE_BYTES = 64 * 1024
GZIP_REFUSAL = (
    "a gzip object cannot be sharded: a deflate stream can only be decoded from its first byte, so no "
    "shard can start in the middle; run it with shards: 1 (or store the object uncompressed)"
)


@dataclass(frozen=True)
class ShardPlan:
    """N nominal byte ranges of an object of *size* bytes."""

    size: int
    shards: int

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards must be at least 1, not {self.shards}")
        if self.size < 0:
            raise ValueError(f"size must not be negative, not {self.size}")

    @property
    def shard_bytes(self) -> int:
        return max(1, math.ceil(self.size / self.shards))

    def begin(self, index: int) -> int:
        """First byte of shard *index*'s nominal range."""
        self._check(index)
        return min(index * self.shard_bytes, self.size)

    def end(self, index: int) -> int:
        """One past the last byte of the nominal range (the object's size for the last shard)."""
        self._check(index)
        return self.size if index == self.shards - 1 else min((index + 1) * self.shard_bytes, self.size)

    def scan_from(self, index: int) -> int:
        """Where shard *index* starts reading: the byte before its range (a newline there ends the
        record before the shard's first one)."""
        return max(self.begin(index) - 1, 0)

    def _check(self, index: int) -> None:
        if not 0 <= index < self.shards:
            raise ValueError(f"shard index {index} is outside 0..{self.shards - 1}")


@dataclass(frozen=True)
class ShardEdges:
    """What one shard found: the bytes it owned [start, end), the quote state it assumed at its scan
    point and the one its bytes lead to at the next shard's scan point (None for the last shard),
    and the newlines it owned."""

    index: int
    assumed_in_quotes: bool
    start: int
    end: int
    end_in_quotes: bool | None
    newlines: int

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "assumedInQuotes": self.assumed_in_quotes,
            "start": self.start,
            "end": self.end,
            "endInQuotes": self.end_in_quotes,
            "newlines": self.newlines,
        }

    @classmethod
    def from_json(cls, value: dict[str, object]) -> ShardEdges:
        end_in_quotes = value.get("endInQuotes")
        return cls(
            index=_int(value, "index"),
            assumed_in_quotes=bool(value.get("assumedInQuotes")),
            start=_int(value, "start"),
            end=_int(value, "end"),
            end_in_quotes=None if end_in_quotes is None else bool(end_in_quotes),
            newlines=_int(value, "newlines"),
        )


def _int(value: dict[str, object], key: str) -> int:
    item = value.get(key)
    if not isinstance(item, int) or isinstance(item, bool):
        raise ValueError(f"shard edges: {key} must be an integer, not {item!r}")
    return item


class ShardCutter:
    """Feeds on the object's bytes from `plan.scan_from(index)` on, in chunks of any size, and hands
    back the bytes the shard owns; `done` once the shard's last record is complete (read no further).
    """

    def __init__(
        self,
        plan: ShardPlan,
        index: int,
        quote: bytes | None,
        *,
        assumed_in_quotes: bool | None = None,
        delimiter: bytes = b",",
    ) -> None:
        """*assumed_in_quotes*: the quote state at the scan point; None speculates it from the bytes."""
        self.plan = plan
        self.index = index
        self._quote = quote
        self._delimiter = delimiter
        self._offset = plan.scan_from(index)
        self._last = index == plan.shards - 1
        # The next shard's scan point: the quote state there is this shard's report.
        self._watch = plan.scan_from(index + 1) if not self._last else None
        self._start: int | None = 0 if index == 0 else None
        self._end: int | None = None
        self._end_in_quotes: bool | None = None
        self._newlines = 0
        # None: speculate the state from the first PROBE_BYTES (held in _probe until then).
        self._speculating = assumed_in_quotes is None and index > 0 and quote is not None
        self._probe = bytearray()
        self._assumed = False
        self._in_quotes = False
        if not self._speculating:
            self._settle(bool(assumed_in_quotes) and index > 0)

    def _settle(self, assumed_in_quotes: bool) -> None:
        self._assumed = self._in_quotes = assumed_in_quotes
        if self._watch is not None and self._watch <= self._offset:  # an empty range (tiny object)
            self._end_in_quotes = self._in_quotes

    @property
    def done(self) -> bool:
        return self._end is not None

    @property
    def assumed_in_quotes(self) -> bool | None:
        """The state assumed at the scan point; None while it is still being speculated."""
        return None if self._speculating else self._assumed

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[memoryview]:
        """The owned parts of *chunk* (which continues the bytes fed so far); while the quote state is
        speculated, nothing until PROBE_BYTES arrived (or `flush` at the end of the object)."""
        if self._speculating:
            self._probe += chunk
            return self._decide() if len(self._probe) >= PROBE_BYTES else []
        return self._scan(chunk)

    def flush(self) -> list[memoryview]:
        """The owned parts of the bytes held back for speculation: call at the end of the object."""
        return self._decide() if self._speculating else []

    def _decide(self) -> list[memoryview]:
        window = bytes(self._probe)
        self._probe = bytearray()
        self._speculating = False
        assert self._quote is not None  # speculation is only on with a quote character
        probe = window[:PROBE_BYTES]  # the same evidence whatever the chunk sizes
        self._settle(bool(speculate_quote_state(probe, self._quote, self._delimiter)))
        return self._scan(window)

    def _scan(self, chunk: bytes | bytearray | memoryview) -> list[memoryview]:
        owned: list[memoryview] = []
        view = memoryview(chunk).cast("B")
        position = 0
        while position < len(view) and self._end is None:
            here = self._offset + position
            if self._watch is not None and self._end_in_quotes is None and here == self._watch:
                self._end_in_quotes = self._in_quotes
            limit = len(view)
            if self._watch is not None and self._end_in_quotes is None:
                limit = min(limit, self._watch - self._offset)
            if self._start is not None and self._end_in_quotes is None:
                # Inside the range: pass bytes through, tracking only the quote parity.
                piece = view[position:limit]
                self._own(owned, piece)
                position = limit
                continue
            # Looking for a record end: the shard's start, or (past the watch point) its end.
            found = self._find_record_end(view, position, limit)
            if found < 0:
                if self._start is not None:
                    self._own(owned, view[position:limit], quotes_counted=True)
                position = limit
                continue
            if self._start is None:
                self._start = self._offset + found + 1
                if self._end_in_quotes is not None:  # no record starts in this shard's range
                    self._end = self._start
            else:
                self._own(owned, view[position : found + 1], quotes_counted=True)
                self._end = self._offset + found + 1
            position = found + 1
        self._offset += len(view) if self._end is None else position
        return owned

    def finish(self) -> ShardEdges:
        """The shard's edges, once `done` or at the end of the object (after `flush`)."""
        if self._speculating:
            raise RuntimeError("ShardCutter.finish() before flush(): bytes held for speculation were not cut")
        if self._start is None:
            self._start = self._offset
        if self._end is None:
            self._end = self._offset
            if self._watch is not None and self._end_in_quotes is None:
                self._end_in_quotes = self._in_quotes
        return ShardEdges(
            index=self.index,
            assumed_in_quotes=self._assumed,
            start=self._start,
            end=self._end,
            end_in_quotes=None if self._last else self._end_in_quotes,
            newlines=self._newlines,
        )

    def _own(self, owned: list[memoryview], piece: memoryview, *, quotes_counted: bool = False) -> None:
        if not piece:
            return
        owned.append(piece)
        self._newlines += _count(piece, b"\n")
        if not quotes_counted and self._quote is not None and _count(piece, self._quote) % 2:
            self._in_quotes = not self._in_quotes

    def _find_record_end(self, view: memoryview, position: int, limit: int) -> int:
        """Index in *view* of the first newline in [position, limit) outside quotes, or -1; the quote
        state is advanced to that newline (or to *limit*). Bytes scanned before the shard's start are
        not owned, so their quotes are counted here."""
        segment = bytes(view[position:limit])  # one record's worth, usually: the scan stops at its end
        quote = self._quote
        at = 0
        while at < len(segment):
            newline = segment.find(b"\n", at)
            stop = len(segment) if newline < 0 else newline
            if quote is not None and segment.count(quote, at, stop) % 2:
                self._in_quotes = not self._in_quotes
            if newline < 0:
                return -1
            if not self._in_quotes:
                return position + newline
            at = newline + 1
        return -1


def _count(piece: memoryview, byte: bytes) -> int:
    """Occurrences of one byte in *piece* (numpy compares at memory speed on large pieces)."""
    if len(piece) < 1 << 16:
        return bytes(piece).count(byte)
    return int(np.count_nonzero(np.frombuffer(piece, dtype=np.uint8) == byte[0]))


def cut(
    data: bytes,
    plan: ShardPlan,
    index: int,
    quote: bytes | None,
    *,
    assumed_in_quotes: bool | None = False,
    chunk_bytes: int = 1 << 20,
    delimiter: bytes = b",",
) -> tuple[bytes, ShardEdges]:
    """Shard *index* of a whole object held in memory: its owned bytes and edges (tests, small files).
    *assumed_in_quotes* None speculates the state, as a shard's first run does."""
    cutter = ShardCutter(plan, index, quote, assumed_in_quotes=assumed_in_quotes, delimiter=delimiter)
    owned: list[bytes] = []
    position = plan.scan_from(index)
    while position < len(data) and not cutter.done:
        owned.extend(bytes(piece) for piece in cutter.feed(data[position : position + chunk_bytes]))
        position += chunk_bytes
    owned.extend(bytes(piece) for piece in cutter.flush())
    return b"".join(owned), cutter.finish()


def speculate_quote_state(window: bytes, quote: bytes, delimiter: bytes) -> bool | None:
    """Whether the first byte of *window* (bytes from the middle of a CSV object) is inside a quoted
    field: True, False, or None when the window cannot tell (no quotes, or as many misplaced quotes
    either way). Under the right state an opening quote follows a delimiter, a line end, a quote (an
    escaped `""`) or nothing, and a closing quote is followed by one of them; under the wrong state
    every quote swaps role, so text around quoted fields shows up as misplaced quotes."""
    if len(quote) != 1 or len(delimiter) != 1:
        return None
    data = np.frombuffer(window, dtype=np.uint8)
    quotes = np.flatnonzero(data == quote[0])
    if not len(quotes):
        return None
    allowed = np.zeros(256, dtype=bool)
    allowed[[delimiter[0], ord("\n"), ord("\r"), quote[0]]] = True
    before = np.ones(len(quotes), dtype=bool)  # the window's first byte: nothing before it to check
    inner = quotes > 0
    before[inner] = allowed[data[quotes[inner] - 1]]
    after = np.ones(len(quotes), dtype=bool)  # the window's last byte: its follower is unseen
    inner = quotes < len(data) - 1
    after[inner] = allowed[data[quotes[inner] + 1]]
    even = np.arange(len(quotes)) % 2 == 0
    # Outside quotes at the start: the 1st, 3rd, ... quote opens a field, the 2nd, 4th, ... closes it.
    misplaced_outside = int(np.count_nonzero(~before[even]) + np.count_nonzero(~after[~even]))
    misplaced_inside = int(np.count_nonzero(~before[~even]) + np.count_nonzero(~after[even]))
    if misplaced_outside == misplaced_inside:
        return None
    return misplaced_inside < misplaced_outside


def first_mismatch(edges: Sequence[ShardEdges]) -> tuple[int, bool] | None:
    """The first shard whose assumed quote state differs from its left neighbour's end state, with the
    state it must be re-run with; None when the chain agrees (every shard's bytes are right)."""
    ordered = sorted(edges, key=lambda item: item.index)
    if [item.index for item in ordered] != list(range(len(ordered))):
        raise ValueError(f"shard edges are missing shards: {[item.index for item in ordered]}")
    for left, right in itertools.pairwise(ordered):
        if left.end_in_quotes is None:
            raise ValueError(f"shard {left.index} reported no end state but is not the last shard")
        if right.assumed_in_quotes != left.end_in_quotes:
            return right.index, left.end_in_quotes
    return None


def line_bases(edges: Sequence[ShardEdges]) -> list[int]:
    """The 1-based line number of each shard's first owned byte in the whole object."""
    bases: list[int] = []
    line = 1
    for item in sorted(edges, key=lambda item: item.index):
        bases.append(line)
        line += item.newlines
    return bases


def global_line(base: int, local_line: int, *, index: int, header_prepended: bool) -> int:
    """The object's line number of a line a shard's parser numbered *local_line*. Shards after the
    first parse the header record followed by their own bytes, so their line 2 is their first."""
    if index == 0 or not header_prepended:
        return base + local_line - 1
    return base + local_line - 2


def header_record(prefix: bytes, quote: bytes | None) -> bytes | None:
    """The first record of the object (without a UTF-8 BOM, with its line end) from its first bytes,
    or None when *prefix* does not hold all of it yet (read a longer prefix)."""
    data = prefix[len(UTF8_BOM) :] if prefix.startswith(UTF8_BOM) else prefix
    end = first_record_end(data, quote)
    return data[:end] if end else None


def refusal(*, shards: int, compression: str, first_bytes: bytes) -> str | None:
    """Why this object cannot be sharded, or None: gzip (by --compression gzip, or detected from its
    magic bytes under auto) cannot be split; plain objects can. Same detection as a 1-shard run."""
    if shards <= 1:
        return None
    if compression == "gzip" or (compression == "auto" and first_bytes.startswith(GZIP_MAGIC)):
        return GZIP_REFUSAL
    return None
