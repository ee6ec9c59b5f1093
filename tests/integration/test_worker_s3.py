"""The worker against moto's S3 server over HTTP: S3 in, S3 out, errors, progress patches."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawljob import kube
from crawljob.local.emulator import Emulator
from crawljob_worker.__main__ import main
from crawljob_worker.errors import WorkerError
from crawljob_worker.ranged import RangedS3Stream
from crawljob_worker.uri import Location


def run_worker(tmp_path: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    termination = tmp_path / "termination-log"
    code = main([*argv, "--termination-log", str(termination)])
    return code, json.loads(termination.read_text())


def read_s3_parts(s3_client: Any, bucket: str, prefix: str) -> tuple[pa.Table, dict[str, Any]]:
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=f"{prefix}_manifest.json")["Body"].read())
    tables = []
    for part in manifest["parts"]:
        body = s3_client.get_object(Bucket=bucket, Key=prefix + part["name"])["Body"].read()
        tables.append(pq.read_table(io.BytesIO(body)))
    return pa.concat_tables(tables), manifest


def sample_csv(rows: int) -> bytes:
    lines = [
        f'2024-05-01T10:{n // 60 % 60:02d}:{n % 60:02d},sensor-{n % 13},{n % 97 / 3:.3f},"note {n}, ok"'
        for n in range(rows)
    ]
    return ("ts,device,temp,note\n" + "\n".join(lines) + "\n").encode()


@pytest.mark.usefixtures("s3_env")
def test_s3_object_to_parquet_parts_under_the_output_prefix(
    tmp_path: Path, s3_client: Any, bucket: str
) -> None:
    body = sample_csv(30000)
    s3_client.put_object(Bucket=bucket, Key="landing/day 1/data.csv", Body=body)
    code, message = run_worker(
        tmp_path, f"s3://{bucket}/landing/day 1/data.csv", "--output", f"s3://{bucket}/out/cj",
        "--chunk-size-mb", "0.2", "--part-size-mb", "0.05",
    )  # fmt: skip
    assert code == 0, message
    table, manifest = read_s3_parts(s3_client, bucket, "out/cj/")
    assert table.num_rows == message["rowsWritten"] == message["rowsRead"] == 30000
    assert table.column("note")[29999].as_py() == "note 29999, ok"
    assert message["bytesRead"] == len(body)
    assert message["outputUri"] == f"s3://{bucket}/out/cj/"
    assert message["manifestUri"] == f"s3://{bucket}/out/cj/_manifest.json"
    assert message["outputObjects"] == len(manifest["parts"]) > 1
    head = s3_client.head_object(Bucket=bucket, Key="landing/day 1/data.csv")
    assert manifest["source"]["eTag"] == head["ETag"]
    assert manifest["source"]["size"] == len(body)
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="out/cj/")["Contents"]
    sizes = {item["Key"].rsplit("/", 1)[1]: item["Size"] for item in listed}
    assert all(sizes[part["name"]] == part["bytes"] for part in manifest["parts"])


@pytest.mark.usefixtures("s3_env")
def test_gzip_object_with_rejects_on_s3(tmp_path: Path, s3_client: Any, bucket: str) -> None:
    body = b"a,b\n1,2\n3\n4,5\n"
    s3_client.put_object(Bucket=bucket, Key="in/x.csv.gz", Body=gzip.compress(body))
    code, message = run_worker(
        tmp_path, f"s3://{bucket}/in/x.csv.gz", "--output", f"s3://{bucket}/out/", "--max-reject-ratio", "0.5"
    )
    assert code == 0, message
    rejects = s3_client.get_object(Bucket=bucket, Key="out/_rejects.csv")["Body"].read().decode()
    assert list(csv.reader(rejects.splitlines())) == [
        ["line", "reason", "record"],
        ["3", "expected 2 fields, found 1", "3"],
    ]
    assert message["rejectsUri"] == f"s3://{bucket}/out/_rejects.csv"


@pytest.mark.usefixtures("s3_env")
@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("s3://{bucket}/missing.csv", "SourceNotFound"),
        ("s3://no-such-bucket-crawljob/x.csv", "SourceNotFound"),
    ],
)
@pytest.mark.parametrize("read", [(), ("--s3-connections", "4")], ids=["one-stream", "ranged"])
def test_missing_object_or_bucket_exits_4(
    tmp_path: Path, bucket: str, source: str, reason: str, read: tuple[str, ...]
) -> None:
    code, message = run_worker(
        tmp_path, source.format(bucket=bucket), "--output", f"s3://{bucket}/out/", *read
    )
    assert (code, message["reason"], message["outcome"]) == (4, reason, "Failed")
    assert "does not exist" in message["message"]


@pytest.mark.usefixtures("s3_env")
@pytest.mark.parametrize(
    "read", [(), ("--s3-connections", "3", "--s3-range-mb", "0.01")], ids=["one-stream", "ranged"]
)
def test_a_version_id_reads_that_version_of_the_object(
    tmp_path: Path, s3_client: Any, bucket: str, read: tuple[str, ...]
) -> None:
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = s3_client.put_object(Bucket=bucket, Key="v.csv", Body=sample_csv(500))["VersionId"]
    s3_client.put_object(Bucket=bucket, Key="v.csv", Body=sample_csv(20))
    code, message = run_worker(
        tmp_path, f"s3://{bucket}/v.csv", "--output", f"s3://{bucket}/v/", "--version-id", old, *read
    )
    assert code == 0, message
    table, manifest = read_s3_parts(s3_client, bucket, "v/")
    assert table.num_rows == message["rowsWritten"] == 500
    assert manifest["source"]["versionId"] == old


@pytest.mark.usefixtures("s3_env")
def test_an_unwritable_output_is_reported_before_a_missing_source(tmp_path: Path, bucket: str) -> None:
    """The source's GET is sent in the background first (opening.py); the output check still decides."""
    code, message = run_worker(
        tmp_path, f"s3://{bucket}/missing.csv", "--output", "s3://no-such-output-bucket-cj/out/"
    )
    assert (code, message["reason"]) == (6, "OutputForbidden")


@pytest.mark.usefixtures("s3_env")
def test_unwritable_output_exits_6(tmp_path: Path, s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="in.csv", Body=b"a\n1\n")
    code, message = run_worker(
        tmp_path, f"s3://{bucket}/in.csv", "--output", "s3://no-such-output-bucket-cj/out/"
    )
    assert (code, message["reason"]) == (6, "OutputForbidden")


@pytest.mark.usefixtures("s3_env")
async def test_progress_is_patched_into_the_crawljob_status(
    tmp_path: Path, s3_client: Any, bucket: str, kube_client: kube.KubeClient, emulator: tuple[Emulator, str]
) -> None:
    body = sample_csv(20000)
    s3_client.put_object(Bucket=bucket, Key="p.csv", Body=body)
    crawljob = {
        "apiVersion": "crawljob.io/v1alpha1",
        "kind": "CrawlJob",
        "metadata": {"name": "p-csv"},
        "spec": {"source": {"bucket": bucket, "key": "p.csv"}},
    }
    await kube_client.create(kube.CRAWLJOBS, "jobs", crawljob)
    argv = [
        f"s3://{bucket}/p.csv", "--output", f"s3://{bucket}/out/", "--chunk-size-mb", "0.1",
        "--progress-interval", "0", "--name", "p-csv", "--namespace", "jobs", "--kube-server", emulator[1],
    ]  # fmt: skip
    code, message = await asyncio.to_thread(run_worker, tmp_path, *argv)
    assert code == 0, message
    got = await kube_client.get(kube.CRAWLJOBS, "jobs", "p-csv")
    progress = got["status"]["progress"]
    assert progress["bytesRead"] == progress["bytesTotal"] == len(body)
    assert progress["rowsRead"] == 20000
    assert progress["percent"] == "100%"
    assert progress["updateTime"].endswith("Z")


@pytest.mark.usefixtures("s3_env")
def test_progress_failures_are_not_fatal(tmp_path: Path, s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="q.csv", Body=b"a\n1\n")
    code, message = run_worker(
        tmp_path, f"s3://{bucket}/q.csv", "--output", f"s3://{bucket}/out/",
        "--name", "q", "--kube-server", "http://127.0.0.1:9",
    )  # fmt: skip
    assert code == 0, message


def test_ranged_reads_refuse_an_object_replaced_while_it_is_read(s3_client: Any, bucket: str) -> None:
    """Ranges are pinned to the eTag the HEAD found: after a replacement the next range's GET fails
    its If-Match, and the read stops instead of mixing two objects."""
    s3_client.put_object(Bucket=bucket, Key="moving.csv", Body=b"x" * 100_000)
    stream = RangedS3Stream(
        s3_client,
        Location("moving.csv", bucket),
        version_id=None,
        retries=2,
        connections=2,
        range_bytes=10_000,
    )
    try:
        buffer = bytearray(10_000)
        assert stream.readinto(buffer) == 10_000  # the first range, fetched before the replacement
        s3_client.put_object(Bucket=bucket, Key="moving.csv", Body=b"y" * 100_000)
        with pytest.raises(WorkerError) as failure:
            while stream.readinto(buffer):
                assert bytes(buffer[:1]) == b"x"
        assert failure.value.reason == "SourceNotFound"
        assert "replaced while it was being read" in failure.value.message
    finally:
        stream.close()


def test_the_program_ends_after_every_s3_upload_is_complete(
    tmp_path: Path, s3_env: dict[str, str], s3_client: Any, bucket: str
) -> None:
    """The installed `crawljob-worker` leaves with os._exit: the parts uploaded in the background,
    the manifest and the termination message are all complete by then."""
    body = b"id,device,reading\n" + b"".join(
        f"{n},dev-{n % 977},{n * 0.5}\n".encode() for n in range(200_000)
    )
    s3_client.put_object(Bucket=bucket, Key="in.csv", Body=body)
    termination = tmp_path / "termination-log"
    script = Path(sys.executable).parent / "crawljob-worker"
    done = subprocess.run(
        [
            str(script), f"s3://{bucket}/in.csv", "--output", f"s3://{bucket}/out/",
            "--termination-log", str(termination), "--chunk-size-mb", "1", "--part-size-mb", "1",
        ],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **s3_env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    message = json.loads(termination.read_text())
    assert json.loads(done.stdout) == message and message["rowsWritten"] == 200_000
    table, manifest = read_s3_parts(s3_client, bucket, "out/")
    assert table.num_rows == 200_000 and len(manifest["parts"]) == message["outputObjects"] > 1
    for part in manifest["parts"]:
        head = s3_client.head_object(Bucket=bucket, Key="out/" + part["name"])
        assert head["ContentLength"] == part["bytes"]
