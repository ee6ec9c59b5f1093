"""Sharded runs of the worker (`--shards N --shard-index I`) against moto's S3 server and local files:
the same rows, rejects and line numbers as one worker, one manifest, gzip refused, re-runs."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawljob_worker.__main__ import main
from crawljob_worker.shard import ShardPlan

DTYPES = '{"id": "int64", "amount": "float64"}'


def sample(rows: int, *, crlf: bool = False, bom: bool = False) -> bytes:
    """Quoted fields with line ends in them, commas and escaped quotes; every 97th id is not a number."""
    end = "\r\n" if crlf else "\n"
    lines = ["id,amount,note"]
    for number in range(rows):
        identifier = "x" if number % 97 == 5 else str(number)
        note = f'"line one{end}line ""two"", {number}{end}end"' if number % 3 == 0 else f"plain {number}"
        lines.append(f"{identifier},{number / 4},{note}")
    return (b"\xef\xbb\xbf" if bom else b"") + (end.join(lines) + end).encode()


def run_worker(tmp_path: Path, name: str, *argv: str) -> tuple[int, dict[str, Any]]:
    termination = tmp_path / f"termination-{name}"
    code = main([*argv, "--termination-log", str(termination)])
    return code, json.loads(termination.read_text())


def rows_of(parts: list[bytes]) -> list[tuple[Any, ...]]:
    table = pa.concat_tables([pq.read_table(io.BytesIO(part)) for part in parts])
    return sorted(zip(*(table.column(name).to_pylist() for name in table.column_names), strict=True))


def s3_read(s3_client: Any, bucket: str, key: str) -> bytes:
    return bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def s3_result(
    s3_client: Any, bucket: str, prefix: str
) -> tuple[list[tuple[Any, ...]], dict[str, Any], bytes]:
    manifest = json.loads(s3_read(s3_client, bucket, prefix + "_manifest.json"))
    parts = [
        s3_read(s3_client, bucket, part["uri"].split(f"s3://{bucket}/", 1)[1]) for part in manifest["parts"]
    ]
    rejects = s3_read(s3_client, bucket, prefix + "_rejects.csv") if manifest["rejects"] else b""
    return rows_of(parts), manifest, rejects


@pytest.mark.usefixtures("s3_env")
@pytest.mark.parametrize("shards", [2, 3, 4, 7])
def test_shards_give_the_rows_rejects_and_line_numbers_of_one_worker(
    tmp_path: Path, s3_client: Any, bucket: str, shards: int
) -> None:
    s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=sample(3000, crlf=True, bom=True))
    common = ["--dtypes", DTYPES, "--max-reject-ratio", "0.05", "--chunk-size-mb", "0.05"]
    code, single = run_worker(
        tmp_path, "one", f"s3://{bucket}/in/data.csv", "--output", f"s3://{bucket}/one/", *common
    )
    assert code == 0, single
    messages = []
    for index in range(shards):
        code, message = run_worker(
            tmp_path, f"shard-{index}", f"s3://{bucket}/in/data.csv", "--output", f"s3://{bucket}/many/",
            "--shards", str(shards), "--shard-index", str(index), "--run-id", "run-1", *common,
        )  # fmt: skip
        assert code == 0, message
        messages.append(message)
    expected_rows, _, expected_rejects = s3_result(s3_client, bucket, "one/")
    rows, manifest, rejects = s3_result(s3_client, bucket, "many/")
    assert rows == expected_rows
    assert rejects == expected_rejects  # the same line numbers, reasons and records
    assert manifest["rowsRead"] == single["rowsRead"] == 3000
    assert manifest["rowsRejected"] == single["rowsRejected"] == 31
    assert [item["index"] for item in manifest["shards"]] == list(range(shards))
    assert sum(item["rowsRead"] for item in manifest["shards"]) == 3000
    # The last shard finalized: its termination message carries the whole object's counts.
    assert (
        messages[-1]["rowsRead"] == 3000
        and messages[-1]["manifestUri"] == f"s3://{bucket}/many/_manifest.json"
    )
    assert messages[0]["rowsRead"] < 3000
    assert [message["shard"] for message in messages] == [
        {"index": index, "count": shards, "finalized": index == shards - 1} for index in range(shards)
    ]


def test_a_quoted_field_across_a_boundary_makes_the_finalizer_re_run_that_shard(tmp_path: Path) -> None:
    note = "\\n".join(f"x{number},y" for number in range(400)).replace("\\n", "\n")
    data = ('id,note\n1,"' + note + '"\n2,plain\n3,end\n').encode()
    plan = ShardPlan(len(data), 2)
    assert data[: plan.scan_from(1)].count(b'"') % 2 == 1  # shard 1 starts inside the quoted field
    source = tmp_path / "data.csv"
    source.write_bytes(data)
    out = tmp_path / "out"
    for index in range(2):
        code, message = run_worker(
            tmp_path,
            f"s{index}",
            str(source),
            "--output",
            str(out),
            "--shards",
            "2",
            "--shard-index",
            str(index),
            "--run-id",
            "run-1",
        )
        assert code == 0, message
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [item["rerun"] for item in manifest["shards"]] == [False, True]
    assert manifest["shards"][1]["assumedInQuotes"] is True
    parts = [Path(part["uri"]).read_bytes() for part in manifest["parts"]]
    assert sorted(row[0] for row in rows_of(parts)) == [1, 2, 3]
    assert message["rowsRead"] == 3


def test_a_retried_shard_after_the_others_finished_finalizes_the_same_result(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_bytes(sample(500))
    out = tmp_path / "out"
    args = [
        str(source),
        "--output",
        str(out),
        "--shards",
        "3",
        "--run-id",
        "run-1",
        "--dtypes",
        DTYPES,
        "--max-reject-ratio",
        "0.5",
    ]
    for index in (0, 2, 1):
        assert run_worker(tmp_path, f"s{index}", *args, "--shard-index", str(index))[0] == 0
    first = json.loads((out / "_manifest.json").read_text())
    code, message = run_worker(tmp_path, "again", *args, "--shard-index", "1")  # the Job retried shard 1
    assert code == 0, message
    again = json.loads((out / "_manifest.json").read_text())
    assert again["rowsRead"] == first["rowsRead"] == message["rowsRead"] == 500
    assert [part["sha256"] for part in again["parts"]] == [part["sha256"] for part in first["parts"]]


def test_gzip_is_refused_for_sharding_with_a_clear_reason(tmp_path: Path) -> None:
    source = tmp_path / "data.csv.gz"
    source.write_bytes(gzip.compress(sample(50)))
    code, message = run_worker(
        tmp_path, "gz", str(source), "--output", str(tmp_path / "out"), "--shards", "2", "--run-id", "r"
    )
    assert code == 3
    assert message["reason"] == "BadInput" and "gzip object cannot be sharded" in message["message"]
    assert message["message"].startswith("shard 0 of 2: ")  # the CrawlJob's failure names the shard


def test_the_reject_ratio_applies_to_the_whole_object(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_bytes(sample(500))  # 6 of 500 rows rejected: 1.2 %
    out = tmp_path / "out"
    args = [
        str(source),
        "--output",
        str(out),
        "--shards",
        "2",
        "--run-id",
        "run-1",
        "--dtypes",
        DTYPES,
        "--max-reject-ratio",
        "0.01",
    ]
    assert run_worker(tmp_path, "s0", *args, "--shard-index", "0")[0] == 0  # a shard alone never fails on it
    code, message = run_worker(tmp_path, "s1", *args, "--shard-index", "1")
    assert code == 5 and message["reason"] == "RejectThresholdExceeded", message
    assert json.loads((out / "_manifest.json").read_text())["outcome"] == "Failed"


def test_a_shard_index_outside_the_shards_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["x.csv", "--output", str(tmp_path), "--shards", "2", "--shard-index", "2", "--run-id", "r"])
    assert code == 2 and "--shard-index must be below --shards (2)" in capsys.readouterr().out
