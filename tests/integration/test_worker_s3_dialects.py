"""Every dialect and edge case of the local-file tests, read from moto's S3 server as well: the S3 run
must give the same exit code, counts, table, rejects and manifest facts as the local run of the same
bytes (S3 in, S3 out)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from crawljob_worker.__main__ import main


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    flags: tuple[str, ...] = ()
    key: str = "in.csv"
    code: int = 0
    written: int = 0  # rows written, as the local tests establish
    rejected: int = 0


def _bad_rows() -> bytes:
    lines = ["id,temp,label"]
    for n in range(600):
        lines.append(f'{n},{n / 10},"row {n}, ok"')
        if n == 10:
            lines.append(f"{n},1.0")
        if n == 500:
            lines.append(f"{n},warm,x")
        if n == 30:
            lines.append('31,2.0,"multi\nline",extra')
    return ("\n".join(lines) + "\n").encode()


CASES = [
    Case(
        "crlf-bom-quotes-newlines",
        b'\xef\xbb\xbfid,name,note\r\n1,"Smith, J","says ""hi"""\r\n2,plain,"two\r\nlines"\r\n3,x,\r\n',
        written=3,
    ),
    Case(
        "gzip-by-magic",
        gzip.compress(b"a,b\n" + b"".join(b"%d,v%d\n" % (n, n) for n in range(5000))),
        key="no-suffix.bin",
        written=5000,
    ),
    Case("gzip-by-name", gzip.compress(b"a,b\n1,x\n2,y\n"), key="in.csv.gz", written=2),
    Case("empty", b""),
    Case("header-only", b"ts,device,temp\r\n", ("--dtypes", '{"temp": "float64"}')),
    Case("bad-rows-across-blocks", _bad_rows(), ("--chunk-size-mb", "0.004"), written=600, rejected=3),
    Case(
        "reject-ratio-exceeded", _bad_rows(), ("--max-reject-ratio", "0.001"), code=5, written=601, rejected=2
    ),
    Case("binary-garbage", bytes(range(256)) * 100, code=3),
    Case("zip", b"PK\x03\x04" + b"\x00" * 100, code=3),
    Case(
        "no-header-semicolons-latin1",
        "1;Zürich;2,5\n2;Genève;3,0\n".encode("latin-1"),
        ("--no-header", "--delimiter", ";", "--encoding", "latin-1"),
        written=2,
    ),
    Case(
        "many-chunks-many-parts",
        (
            "ts,device,count\n"
            + "".join(f"2024-01-01T00:{n // 60 % 60:02d}:{n % 60:02d},dev{n % 7},{n}\n" for n in range(20000))
        ).encode(),
        ("--chunk-size-mb", "0.05", "--part-size-mb", "0.1"),
        written=20000,
    ),
    Case("zstd-parquet", b"a,b\n1,x\n2,y\n", ("--output-compression", "zstd"), written=2),
    Case("csv-output", b'n,text\n1,"a,b"\n2,c\n', ("--format", "csv"), written=2),
    Case("jsonl-output", b'n,text\n1,"a,b"\n2,c\n', ("--format", "jsonl"), written=2),
]


def _run(source: str, output: str, termination: Path, flags: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
    code = main([source, "--output", output, "--termination-log", str(termination), *flags])
    return code, json.loads(termination.read_text())


def _outputs(read: Any, names: list[str]) -> dict[str, Any]:
    """What the run wrote, in a form that compares across S3 and local: manifest facts, the data
    parts' rows (Parquet read as a table, text parts as text) and the rejects."""
    if "_manifest.json" not in names:
        return {}
    manifest = json.loads(read("_manifest.json"))
    rows: list[Any] = []
    for part in manifest["parts"]:
        body = read(part["name"])
        if part["name"].endswith(".parquet"):
            rows += pq.read_table(io.BytesIO(body)).to_pylist()
        else:
            rows.append(body.decode())
    rejects = (
        list(csv.DictReader(io.StringIO(read("_rejects.csv").decode(), newline="")))
        if "_rejects.csv" in names
        else []
    )
    facts = {
        key: manifest[key]
        for key in ("outcome", "schema", "rowsRead", "rowsWritten", "rowsRejected", "columns")
    }
    facts["source"] = {key: manifest["source"][key] for key in ("size", "compression", "encoding")}
    facts["parts"] = [(part["name"], part["rows"]) for part in manifest["parts"]]
    return {"manifest": facts, "rows": rows, "rejects": rejects}


# One GET stream, and parallel ranged GETs of 10 KB (so the larger cases span many ranges).
READS = {"one-stream": (), "ranged": ("--s3-connections", "3", "--s3-range-mb", "0.01")}


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_s3_and_local_runs_of_the_same_bytes_agree(
    case: Case,
    read: str,
    tmp_path: Path,
    s3_client: Any,
    bucket: str,
    s3_env: dict[str, str],
) -> None:
    local_source = tmp_path / case.key
    local_source.write_bytes(case.data)
    local_out = tmp_path / "out"
    local_code, local_message = _run(str(local_source), str(local_out), tmp_path / "local.term", case.flags)

    s3_client.put_object(Bucket=bucket, Key=case.key, Body=case.data)
    s3_code, s3_message = _run(
        f"s3://{bucket}/{case.key}", f"s3://{bucket}/out/", tmp_path / "s3.term", case.flags + READS[read]
    )

    assert (local_code, local_message["rowsWritten"], local_message["rowsRejected"]) == (
        case.code,
        case.written,
        case.rejected,
    )
    assert s3_code == local_code
    counted = ("outcome", "reason", "rowsRead", "rowsWritten", "rowsRejected", "bytesRead", "outputObjects")
    assert {key: s3_message[key] for key in counted} == {key: local_message[key] for key in counted}
    if local_code in (3, 4):  # refused before anything was written
        assert s3_message["message"].replace(f"s3://{bucket}/{case.key}", "SOURCE") == local_message[
            "message"
        ].replace(str(local_source), "SOURCE")
        return

    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])
    s3_names = [item["Key"].removeprefix("out/") for item in listed]
    local_names = sorted(path.name for path in local_out.iterdir())
    assert sorted(s3_names) == local_names

    def read_s3(name: str) -> bytes:
        body: bytes = s3_client.get_object(Bucket=bucket, Key=f"out/{name}")["Body"].read()
        return body

    s3_outputs = _outputs(read_s3, s3_names)
    local_outputs = _outputs(lambda name: (local_out / name).read_bytes(), local_names)
    assert s3_outputs == local_outputs
    assert len(s3_outputs["rejects"]) == case.rejected
