"""The worker on local files: dialects, edge cases, rejects, parts, outputs, exit codes."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawljob_worker.__main__ import main


def convert(source: Path, out: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    """Run the worker in-process; the exit code and the termination message it wrote."""
    termination = out.parent / f"{out.name}.termination"
    code = main([str(source), "--output", str(out), "--termination-log", str(termination), *flags])
    return code, json.loads(termination.read_text())


def read_parts(out: Path) -> pa.Table:
    manifest = json.loads((out / "_manifest.json").read_text())
    return pa.concat_tables([pq.read_table(out / part["name"]) for part in manifest["parts"]])


def rejects_of(out: Path) -> list[dict[str, str]]:
    with (out / "_rejects.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_dialect_crlf_bom_quotes_and_embedded_newlines(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(
        b'\xef\xbb\xbfid,name,note\r\n1,"Smith, J","says ""hi"""\r\n2,plain,"two\r\nlines"\r\n3,x,\r\n'
    )
    code, message = convert(source, tmp_path / "out")
    assert code == 0, message
    table = read_parts(tmp_path / "out")
    assert table.column_names == ["id", "name", "note"]
    assert table.to_pylist() == [
        {"id": 1, "name": "Smith, J", "note": 'says "hi"'},
        {"id": 2, "name": "plain", "note": "two\r\nlines"},
        {"id": 3, "name": "x", "note": ""},
    ]
    assert message["rowsRead"] == 3
    assert message["outcome"] == "Succeeded"
    assert message["bytesRead"] == source.stat().st_size


@pytest.mark.parametrize("name", ["in.csv.gz", "no-suffix.bin"])
def test_gzip_is_detected_by_its_magic_bytes(tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    source.write_bytes(gzip.compress(b"a,b\n" + b"".join(b"%d,v%d\n" % (n, n) for n in range(5000))))
    code, message = convert(source, tmp_path / "out")
    assert code == 0, message
    assert read_parts(tmp_path / "out").num_rows == 5000
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["source"]["compression"] == "gzip"
    assert message["bytesRead"] == source.stat().st_size


def test_empty_object_succeeds_with_no_rows(tmp_path: Path) -> None:
    source = tmp_path / "empty.csv"
    source.write_bytes(b"")
    code, message = convert(source, tmp_path / "out")
    assert (code, message["rowsRead"], message["outputObjects"]) == (0, 0, 0)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["parts"] == []
    assert manifest["outcome"] == "Succeeded"


def test_header_only_writes_one_empty_part_with_the_schema(tmp_path: Path) -> None:
    source = tmp_path / "header.csv"
    source.write_bytes(b"ts,device,temp\r\n")
    code, message = convert(source, tmp_path / "out", "--dtypes", '{"temp": "float64"}')
    assert (code, message["rowsRead"], message["outputObjects"]) == (0, 0, 1)
    table = read_parts(tmp_path / "out")
    assert table.num_rows == 0
    assert table.schema == pa.schema([("ts", pa.string()), ("device", pa.string()), ("temp", pa.float64())])


def physical(lines: list[str]) -> int:
    """The physical line on which the last of *lines* starts (records may span lines)."""
    return sum(line.count("\n") + 1 for line in lines[:-1]) + 1


def _with_bad_rows(path: Path, good: int) -> dict[int, str]:
    """A file with *good* good rows and three bad ones; returns line number → reason.

    The type error comes late: in the first chunk it would only make the column a string column."""
    lines = ["id,temp,label"]
    bad: dict[int, str] = {}
    for n in range(good):
        lines.append(f'{n},{n / 10},"row {n}, ok"')
        if n == 10:
            lines.append(f"{n},1.0")
            bad[physical(lines)] = "expected 3 fields, found 2"
        if n == good * 9 // 10:
            lines.append(f"{n},warm,x")
            bad[physical(lines)] = "column 'temp': cannot read 'warm' as double"
        if n == 30:
            lines.append('31,2.0,"multi\nline",extra')
            bad[physical(lines)] = "expected 3 fields, found 4"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bad


def test_bad_rows_go_to_rejects_with_exact_line_numbers(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    bad = _with_bad_rows(source, 1000)
    code, message = convert(source, tmp_path / "out", "--chunk-size-mb", "0.004")
    assert code == 0, message
    assert (message["rowsRead"], message["rowsWritten"], message["rowsRejected"]) == (1003, 1000, 3)
    rejected = rejects_of(tmp_path / "out")
    assert {int(row["line"]): row["reason"] for row in rejected} == bad
    assert rejected[1]["record"] == '31,2.0,"multi\nline",extra'
    assert message["rejectsUri"] == str(tmp_path / "out" / "_rejects.csv")


def test_reject_ratio_above_the_limit_fails_with_exit_5_after_writing_rejects(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    _with_bad_rows(source, 100)
    code, message = convert(
        source, tmp_path / "out", "--max-reject-ratio", "0.01", "--dtypes", '{"temp": "float"}'
    )
    assert code == 5
    assert message["reason"] == "RejectThresholdExceeded"
    assert message["rowsRejected"] == 3
    assert len(rejects_of(tmp_path / "out")) == 3


def test_binary_garbage_fails_fast_with_exit_3(tmp_path: Path) -> None:
    source = tmp_path / "image.csv"
    source.write_bytes(bytes(range(256)) * 100)
    code, message = convert(source, tmp_path / "out")
    assert code == 3
    assert message["reason"] == "BadInput"
    assert "binary" in message["message"]


def test_a_zip_file_is_refused_by_its_magic_bytes(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    code, message = convert(source, tmp_path / "out")
    assert (code, message["reason"]) == (3, "BadInput")
    assert "ZIP" in message["message"]


def test_missing_file_exits_4_with_one_line_reason(tmp_path: Path) -> None:
    code, message = convert(tmp_path / "nope.csv", tmp_path / "out")
    assert (code, message["reason"]) == (4, "SourceNotFound")
    assert "nope.csv" in message["message"]
    assert "\n" not in message["message"]


def test_many_chunks_keep_one_schema_across_bounded_parts(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    rows = [f"2024-01-01T00:{n // 60 % 60:02d}:{n % 60:02d},dev{n % 7},{n},{n * 0.5}" for n in range(40000)]
    source.write_text("ts,device,count,value\n" + "\n".join(rows) + "\n")
    code, message = convert(source, tmp_path / "out", "--chunk-size-mb", "0.05", "--part-size-mb", "0.1")
    assert code == 0, message
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert message["outputObjects"] == len(manifest["parts"]) > 2
    schemas = {str(pq.read_schema(tmp_path / "out" / part["name"])) for part in manifest["parts"]}
    assert len(schemas) == 1
    assert sum(part["rows"] for part in manifest["parts"]) == 40000
    assert manifest["columns"]["count"] == {"nullCount": 0, "min": 0, "max": 39999}
    assert manifest["schema"][0] == {"name": "ts", "type": "timestamp[us]"}
    assert all(len(part["sha256"]) == 64 for part in manifest["parts"])


def test_rerun_overwrites_the_same_paths_and_removes_stale_parts(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n" + "".join(f"{n},{'x' * 50}\n" for n in range(20000)))
    out = tmp_path / "out"
    convert(source, out, "--part-size-mb", "0.05", "--chunk-size-mb", "0.05")
    many = sorted(path.name for path in out.iterdir())
    assert len([name for name in many if name.startswith("part-")]) > 1
    (out / "unrelated.txt").write_text("kept")
    code, message = convert(source, out)
    assert code == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "_manifest.json",
        "part-00000.parquet",
        "unrelated.txt",
    ]
    assert read_parts(out).num_rows == message["rowsWritten"] == 20000


@pytest.mark.parametrize(("fmt", "suffix"), [("csv", "csv"), ("jsonl", "jsonl")])
def test_csv_and_jsonl_outputs(tmp_path: Path, fmt: str, suffix: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text('n,text\n1,"a,b"\n2,c\n')
    code, _ = convert(source, tmp_path / "out", "--format", fmt)
    assert code == 0
    written = (tmp_path / "out" / f"part-00000.{suffix}").read_text()
    if fmt == "jsonl":
        assert [json.loads(line) for line in written.splitlines()] == [
            {"n": 1, "text": "a,b"},
            {"n": 2, "text": "c"},
        ]
    else:
        assert list(csv.reader(written.splitlines())) == [["n", "text"], ["1", "a,b"], ["2", "c"]]


def test_no_header_semicolons_and_latin1(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes("café;1\r\nthé;2\r\n".encode("latin-1"))
    code, message = convert(
        source, tmp_path / "out", "--no-header", "--delimiter", ";", "--encoding", "latin-1"
    )
    assert code == 0, message
    assert read_parts(tmp_path / "out").to_pylist() == [
        {"column_1": "café", "column_2": 1},
        {"column_1": "thé", "column_2": 2},
    ]


def test_zstd_parquet(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a\n1\n2\n")
    assert convert(source, tmp_path / "out", "--output-compression", "zstd")[0] == 0
    metadata = pq.read_metadata(tmp_path / "out" / "part-00000.parquet")
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_crawljob_worker_command_and_help(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n")
    command = [sys.executable, "-m", "crawljob.cli", "worker"]
    done = subprocess.run(
        [
            *command,
            str(source),
            "--output",
            f"file://{tmp_path}/out",
            "--termination-log",
            str(tmp_path / "t"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rowsWritten"] == 1
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
    assert "--max-reject-ratio" in helped.stdout
    bad = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "--output is required" in bad.stderr


@pytest.mark.parametrize("flags", [(), ("--string-statistics",)])
def test_parquet_statistics_for_text_columns_only_on_request(tmp_path: Path, flags: tuple[str, ...]) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "device,reading,when\n"
        + "".join(f"d{n % 7},{n}.5,2026-01-0{n % 9 + 1}T00:00:00\n" for n in range(50))
    )
    code, message = convert(source, tmp_path / "out", *flags)
    assert code == 0, message
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    metadata = pq.ParquetFile(tmp_path / "out" / manifest["parts"][0]["name"]).metadata
    columns = {metadata.schema.column(i).name: metadata.row_group(0).column(i) for i in range(3)}
    reading, when, device = (
        columns["reading"].statistics,
        columns["when"].statistics,
        columns["device"].statistics,
    )
    assert (reading.min, reading.max) == (0.5, 49.5)
    assert when is not None and when.has_min_max
    if flags:
        assert device is not None and (device.min, device.max) == ("d0", "d6")
    else:
        assert device is None or not device.has_min_max


def _dictionary_encoded(out: Path) -> dict[str, bool]:
    """Per column of the first part: whether its first row group is dictionary-encoded."""
    manifest = json.loads((out / "_manifest.json").read_text())
    metadata = pq.ParquetFile(out / manifest["parts"][0]["name"]).metadata
    group = metadata.row_group(0)
    return {
        group.column(index).path_in_schema: group.column(index).has_dictionary_page
        and any("DICTIONARY" in encoding for encoding in group.column(index).encodings)
        for index in range(group.num_columns)
    }


def test_parquet_dictionary_only_for_low_cardinality_columns(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    rows = 5000
    source.write_text(
        "device,site,battery,reading,when\n"
        + "".join(
            f"dev-{n * 7919 % 100_003},{('north', 'south', 'lab')[n % 3]},{n % 101},{n * 0.37:.2f},"
            f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}\n"
            for n in range(rows)
        )
    )
    code, message = convert(source, tmp_path / "out")
    assert code == 0, message
    assert _dictionary_encoded(tmp_path / "out") == {
        "device": False,  # every value distinct
        "site": True,
        "battery": True,
        "reading": False,
        "when": False,  # timestamps are delta-encoded
    }
    table = read_parts(tmp_path / "out")
    assert table.num_rows == rows
    assert table.column("device")[1].as_py() == "dev-7919"
    assert table.column("site")[2].as_py() == "lab"


def test_parquet_dictionary_for_every_column_of_a_small_file(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("device,site\n" + "".join(f"dev-{n},s{n % 2}\n" for n in range(50)))
    code, message = convert(source, tmp_path / "out")
    assert code == 0, message
    assert _dictionary_encoded(tmp_path / "out") == {"device": True, "site": True}


def _program(*args: str) -> subprocess.CompletedProcess[str]:
    """`crawljob-worker` as the image runs it: the installed console script, its own process."""
    script = Path(sys.executable).parent / "crawljob-worker"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_program_ends_after_every_output_is_complete(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    with source.open("w") as handle:
        handle.write("id,device,reading\n")
        handle.writelines(f"{n},dev-{n % 977},{n * 0.5}\n" for n in range(300_000))
    out, termination = tmp_path / "out", tmp_path / "termination"
    done = _program(
        str(source), "--output", str(out), "--termination-log", str(termination),
        "--chunk-size-mb", "1", "--part-size-mb", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    message = json.loads(termination.read_text())
    assert json.loads(done.stdout) == message
    assert message["rowsWritten"] == 300_000 and message["outputObjects"] > 1
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["outcome"] == "Succeeded" and len(manifest["parts"]) == message["outputObjects"]
    for part in manifest["parts"]:  # every part uploaded whole before the process ended
        assert (out / part["name"]).stat().st_size == part["bytes"]
        assert pq.read_metadata(out / part["name"]).num_rows == part["rows"]
    assert sum(part["rows"] for part in manifest["parts"]) == 300_000
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [part["name"] for part in manifest["parts"]] + ["_manifest.json"]
    )


def test_a_failed_program_run_still_writes_rejects_manifest_and_message(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n" + "".join(f"{n},{n}\n" if n % 3 else f"{n}\n" for n in range(3000)))
    out, termination = tmp_path / "out", tmp_path / "termination"
    done = _program(str(source), "--output", str(out), "--termination-log", str(termination))
    assert done.returncode == 5
    message = json.loads(termination.read_text())
    assert json.loads(done.stdout) == message
    assert message["reason"] == "RejectThresholdExceeded" and message["rowsRejected"] == 1000
    assert done.stderr.rstrip().splitlines()[-1].startswith("crawljob-worker: RejectThresholdExceeded: ")
    assert json.loads((out / "_manifest.json").read_text())["outcome"] == "Failed"
    with (out / "_rejects.csv").open() as handle:
        assert len(list(csv.reader(handle))) == 1 + 1000


def test_the_program_skips_the_interpreter_shutdown(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a\n1\n")
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('interpreter shutdown ran'))\n"
        "from crawljob_worker.__main__ import console\n"
        "console()\n"
    )
    argv = [str(source), "--output", str(tmp_path / "out"), "--termination-log", str(tmp_path / "t")]
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["rowsWritten"] == 1
    assert "interpreter shutdown ran" not in done.stdout


def test_a_mapped_file_and_a_streamed_one_give_the_same_outputs(tmp_path: Path) -> None:
    """Plain local files are parsed in place from a memory map, gzip ones from a stream of blocks:
    same rows, types, rejects and line numbers, across many small blocks."""
    lines = ["\ufeffid,name,reading"]
    for n in range(20_000):
        if n % 997 == 5:
            lines.append(f"{n},short")  # rejected: a field missing
        elif n % 101 == 0:
            lines.append(f'{n},"two\nlines, quoted",{n / 4}')
        else:
            lines.append(f'{n},"n ""{n}""",{n / 4}')
    text = "\r\n".join(lines) + "\r\n"
    plain, packed = tmp_path / "in.csv", tmp_path / "in.csv.gz"
    plain.write_bytes(text.encode())
    packed.write_bytes(gzip.compress(text.encode()))
    results = []
    for source, out in ((plain, tmp_path / "mapped"), (packed, tmp_path / "streamed")):
        code, message = convert(source, out, "--chunk-size-mb", "1", "--max-reject-ratio", "0.5")
        assert code == 0, message
        results.append((read_parts(out), (out / "_rejects.csv").read_text(), message["rowsRead"]))
    assert results[0][0].equals(results[1][0])
    assert results[0][1:] == results[1][1:]
    assert results[0][0].num_rows == 20_000 - 21 and results[0][2] == 20_000
    assert results[0][0].column("name")[0].as_py() == "two\nlines, quoted"


@pytest.mark.parametrize("output_format", ["parquet", "csv", "jsonl"])
@pytest.mark.parametrize("flags", [(), ("--string-statistics",)])
def test_manifest_text_min_max_only_with_string_statistics(
    tmp_path: Path, output_format: str, flags: tuple[str, ...]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("device,reading\n" + "".join(f"d{n % 7},{n}.5\n" for n in range(50)) + ",\n")
    code, message = convert(
        source, tmp_path / "out", "--format", output_format, "--dtypes", '{"device": "string"}', *flags
    )
    assert code == 0, message
    columns = json.loads((tmp_path / "out" / "_manifest.json").read_text())["columns"]
    assert columns["reading"] == {"nullCount": 1, "min": 0.5, "max": 49.5}
    if flags:
        assert columns["device"] == {"nullCount": 0, "min": "", "max": "d6"}
    else:
        assert columns["device"] == {"nullCount": 0, "min": None, "max": None}


@pytest.mark.parametrize("output_format", ["parquet", "csv"])
def test_manifest_counts_nulls_of_text_columns_without_statistics(tmp_path: Path, output_format: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,\n2,\n")  # b is all empty: a text column of nulls
    code, message = convert(source, tmp_path / "out", "--format", output_format)
    assert code == 0, message
    columns = json.loads((tmp_path / "out" / "_manifest.json").read_text())["columns"]
    assert columns == {
        "a": {"nullCount": 0, "min": 1, "max": 2},
        "b": {"nullCount": 2, "min": None, "max": None},
    }
    assert list(columns) == ["a", "b"]
