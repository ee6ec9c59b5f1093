"""Record-aligned shards with speculative quote states: the union of the shards is the 1-shard file."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawljob_worker.shard import (
    GZIP_REFUSAL,
    PROBE_BYTES,
    ShardEdges,
    ShardPlan,
    cut,
    first_mismatch,
    global_line,
    header_record,
    line_bases,
    refusal,
    speculate_quote_state,
)

QUOTE = b'"'
FIELD = st.text(alphabet='ab,"\n\r é', max_size=12)


def render(rows: list[list[str]], *, crlf: bool, bom: bool) -> bytes:
    """RFC 4180 CSV, every field quoted when it must be, so quoted newlines occur often."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n" if crlf else "\n", quoting=csv.QUOTE_MINIMAL).writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode()


def parse(data: bytes) -> list[list[str]]:
    text = data.decode()
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def run_shards(
    data: bytes, shards: int, chunk_bytes: int, *, speculate: bool = False
) -> tuple[list[bytes], list[ShardEdges], int]:
    """Every shard assumes "outside quotes" (or, with *speculate*, guesses the state from its first
    bytes, as a shard's first run does); mismatched shards are re-run with the state their left
    neighbour reported, as the finalize step does. Returns the owned bytes, edges and re-runs."""
    plan = ShardPlan(len(data), shards)
    first: bool | None = None if speculate else False
    results = [
        cut(data, plan, index, QUOTE, assumed_in_quotes=first, chunk_bytes=chunk_bytes)
        for index in range(shards)
    ]
    reruns = 0
    while (mismatch := first_mismatch([edges for _, edges in results])) is not None:
        index, state = mismatch
        results[index] = cut(data, plan, index, QUOTE, assumed_in_quotes=state, chunk_bytes=chunk_bytes)
        reruns += 1
        assert reruns <= shards
    return [owned for owned, _ in results], [edges for _, edges in results], reruns


def sharded_rows(data: bytes, owned: list[bytes]) -> list[list[str]]:
    """Each shard parses the header record and then its own bytes, as a shard's worker does."""
    header = header_record(data, QUOTE)
    assert header is not None
    rows = parse(owned[0])[1:]
    for part in owned[1:]:
        rows.extend(parse(header + part)[1:])
    return rows


TABLES = st.lists(st.lists(FIELD, min_size=3, max_size=3), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=TABLES,
    shards=st.sampled_from([1, 2, 3, 4, 7]),
    crlf=st.booleans(),
    bom=st.booleans(),
    chunk_bytes=st.integers(min_value=1, max_value=64),
    speculate=st.booleans(),
)
def test_union_of_shards_is_the_one_shard_file(
    rows: list[list[str]], shards: int, crlf: bool, bom: bool, chunk_bytes: int, speculate: bool
) -> None:
    data = render([["id", "name", "note"], *rows], crlf=crlf, bom=bom)
    owned, edges, _ = run_shards(data, shards, chunk_bytes, speculate=speculate)
    assert b"".join(owned) == data  # the shards partition the object, in order, no byte twice
    assert sharded_rows(data, owned) == parse(data)[1:]
    plan = ShardPlan(len(data), shards)
    for item in edges:  # Hadoop's rule: a shard's first record starts in its nominal range (or it owns none)
        assert item.start == item.end or plan.begin(item.index) <= item.start < plan.end(item.index)
    assert line_bases(edges) == [1 + data[: item.start].count(b"\n") for item in edges]


def test_a_quoted_newline_across_a_boundary_is_caught_and_the_shard_re_run() -> None:
    # One long quoted field full of line ends covers the middle of the file: shard 1's scan point is
    # inside quotes, and a shard that assumes "outside" there starts at a newline inside the field.
    note = "\n".join(f"x{number},y" for number in range(30))
    data = render([["id", "note"], ["1", note], ["2", "plain"], ["3", "end"]], crlf=False, bom=False)
    plan = ShardPlan(len(data), 2)
    assert data[: plan.scan_from(1)].count(QUOTE) % 2 == 1  # the setup really straddles the boundary

    first = [cut(data, plan, index, QUOTE) for index in range(2)]
    wrong = sharded_rows(data, [owned for owned, _ in first])
    assert wrong != parse(data)[1:]  # without the check the speculation is silently wrong
    assert first_mismatch([edges for _, edges in first]) == (1, True)

    owned, edges, reruns = run_shards(data, 2, chunk_bytes=7)
    assert reruns == 1
    assert edges[1].assumed_in_quotes is True
    assert sharded_rows(data, owned) == parse(data)[1:]


def test_a_shard_with_no_record_starting_in_its_range_owns_nothing() -> None:
    data = render([["id", "note"], ["1", "z" * 200], ["2", "b"]], crlf=False, bom=False)
    owned, edges, _ = run_shards(data, 7, chunk_bytes=5)
    assert [item.start == item.end for item in edges].count(True) >= 4
    assert b"".join(owned) == data


def test_global_line_numbers_of_a_shard_reject() -> None:
    lines = [b"id,value\n"] + [
        f"{number},{'bad' if number == 17 else number}\n".encode() for number in range(40)
    ]
    data = b"".join(lines)
    owned, edges, _ = run_shards(data, 3, chunk_bytes=1 << 20)
    bases = line_bases(edges)
    expected = 1 + next(index for index, line in enumerate(lines) if b"bad" in line)
    found = []
    for index, part in enumerate(owned):
        text = part if index == 0 else lines[0] + part
        for local, line in enumerate(text.splitlines(), start=1):
            if b"bad" in line:
                found.append(global_line(bases[index], local, index=index, header_prepended=index > 0))
    assert found == [expected]


def test_the_last_shard_reads_to_the_end_without_a_final_newline() -> None:
    data = b'id,v\n1,"a\nb"\n2,c\n3,"d"'
    owned, edges, _ = run_shards(data, 4, chunk_bytes=3)
    assert b"".join(owned) == data
    assert edges[-1].end == len(data) and edges[-1].end_in_quotes is None


def test_header_record_skips_the_bom_and_needs_the_whole_first_record() -> None:
    assert header_record(b'\xef\xbb\xbf"a\nb",c\r\n1,2\n', QUOTE) == b'"a\nb",c\r\n'
    assert header_record(b'"a\nb",c', QUOTE) is None


@pytest.mark.parametrize(
    ("compression", "first_bytes"), [("gzip", b"\x1f\x8b\x08"), ("auto", b"\x1f\x8b\x08")]
)
def test_gzip_is_refused_for_sharding_with_the_reason(compression: str, first_bytes: bytes) -> None:
    assert refusal(shards=2, compression=compression, first_bytes=first_bytes) == GZIP_REFUSAL
    assert "cannot be sharded" in GZIP_REFUSAL
    assert refusal(shards=1, compression=compression, first_bytes=first_bytes) is None


def test_plain_objects_are_not_refused() -> None:
    assert refusal(shards=4, compression="auto", first_bytes=b"id,v\n") is None
    assert refusal(shards=4, compression="none", first_bytes=b"\x1f\x8b\x08") is None  # read as told


def test_edges_round_trip_through_json_and_bad_values_are_named() -> None:
    edges = ShardEdges(index=2, assumed_in_quotes=True, start=10, end=20, end_in_quotes=False, newlines=3)
    assert ShardEdges.from_json(edges.to_json()) == edges
    with pytest.raises(ValueError, match="start"):
        ShardEdges.from_json({**edges.to_json(), "start": "ten"})


def test_missing_shards_are_refused_by_the_chain_check() -> None:
    edges = ShardEdges(index=1, assumed_in_quotes=False, start=0, end=0, end_in_quotes=False, newlines=0)
    with pytest.raises(ValueError, match="missing"):
        first_mismatch([edges])


def test_plan_ranges_cover_the_object() -> None:
    plan = ShardPlan(10, 4)
    assert [(plan.begin(i), plan.end(i)) for i in range(4)] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [plan.scan_from(i) for i in range(4)] == [0, 2, 5, 8]
    with pytest.raises(ValueError, match="shards"):
        ShardPlan(10, 0)


def iot_rows(count: int) -> bytes:
    """Rows shaped like an IoT export (and the benchmarks' files): a third of the bytes are quoted."""
    lines = ['"ts","device_id","site","note"']
    for number in range(count):
        lines.append(f'2024-05-01 00:00:{number % 60:02d},"dev-{number * 7919 % 50000}","north",'
                     f'"reading ok, sensor {number % 997}"')  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def test_speculation_finds_the_quote_state_where_assuming_outside_would_be_wrong() -> None:
    data = iot_rows(20_000)
    plan = ShardPlan(len(data), 16)
    inside = [data[: plan.scan_from(index)].count(QUOTE) % 2 == 1 for index in range(1, 16)]
    assert any(inside) and not all(inside)  # some scan points really fall inside a quoted field
    speculated = [cut(data, plan, index, QUOTE, assumed_in_quotes=None)[1] for index in range(16)]
    assert [edges.assumed_in_quotes for edges in speculated[1:]] == inside
    assert first_mismatch(speculated) is None  # right first time: no shard is re-run
    _, _, reruns = run_shards(data, 16, chunk_bytes=1 << 20)
    assert reruns == inside.count(True)  # assuming "outside" re-runs every such shard


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (b"no quotes at all,1,2\n3,4,5\n", None),
        (b'x","b"\n"c","d"\n', True),  # the first quote closes a field ("x"), then b, c, d are whole
        (b'1,"b","c"\n2,"d","e"\n', False),
        (b'ok, sensor 7"\n2,"dev-1","north"\n', True),
        (b'say ""hi"" there",1\n2,"x"\n', True),  # escaped quotes inside the field the window starts in
        (b'",', None),  # one quote between a delimiter and nothing: no evidence either way
    ],
)
def test_speculate_quote_state(window: bytes, expected: bool | None) -> None:
    assert speculate_quote_state(window, QUOTE, b",") is expected


def test_a_wrong_speculation_is_still_caught_by_the_chain() -> None:
    # Shard 1's first 64 KiB lie inside one long quoted field holding no quote at all: nothing tells
    # the state, so it speculates "outside" (wrong); shard 0 reports "inside"; the chain re-runs it. (Shard 2 sees the field close: right first time.)
    data = render([["id", "note"], ["1", "x,y\n" * 30_000], ["2", "tail, end"]], crlf=False, bom=False)
    plan = ShardPlan(len(data), 3)
    assert QUOTE not in data[plan.scan_from(1) : plan.scan_from(1) + PROBE_BYTES]
    owned, edges, reruns = run_shards(data, 3, chunk_bytes=1 << 16, speculate=True)
    assert reruns == 1 and edges[1].assumed_in_quotes is True and edges[2].assumed_in_quotes is True
    assert sharded_rows(data, owned) == parse(data)[1:]
    assert b"".join(owned) == data
