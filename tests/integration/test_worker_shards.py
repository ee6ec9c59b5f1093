"""Sharded runs of the worker (`--shards N --shard-index I`) against moto's S3 server and local files:
the same rows, rejects and line numbers as one worker, one manifest, gzip refused, re-runs."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawljob import kube, resource
from crawljob.local.emulator import Emulator
from crawljob_worker.__main__ import main
from crawljob_worker.shard import PROBE_BYTES, ShardPlan
from fakes.s3proxy import ConditionalWritesProxy

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


def sharded(source: str, output: str, shards: int, run_id: str, *extra: str) -> list[str]:
    """The worker's argv for a shard of run *run_id* (the shard index, if any, among *extra*)."""
    return [source, "--output", output, "--shards", str(shards), "--run-id", run_id, *extra]


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
    assert manifest["bytesRead"] == single["bytesRead"]  # the shards' owned bytes add up to the object
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


@pytest.mark.parametrize(
    ("lines", "rerun"),
    [
        # Shard 1's first 64 KiB hold the end of the field: speculation sees its closing quote and
        # starts the shard inside quotes, right the first time.
        (400, False),
        # Shard 1's first 64 KiB lie inside the field and hold no quote: nothing tells the state, the
        # shard speculates "outside" (wrong), shard 0 reports "inside", the finalizer re-runs shard 1.
        (30_000, True),
    ],
)
def test_a_quoted_field_across_a_boundary_is_speculated_or_re_run_by_the_finalizer(
    tmp_path: Path, lines: int, rerun: bool
) -> None:
    note = "\n".join(f"x{number},y" for number in range(lines))
    data = ('id,note\n1,"' + note + '"\n2,plain\n3,end\n').encode()
    plan = ShardPlan(len(data), 2)
    assert data[: plan.scan_from(1)].count(b'"') % 2 == 1  # shard 1 starts inside the quoted field
    window = data[plan.scan_from(1) : plan.scan_from(1) + PROBE_BYTES]
    assert (b'"' not in window) is rerun
    source = tmp_path / "data.csv"
    source.write_bytes(data)
    out = tmp_path / "out"
    for index in range(2):
        code, message = run_worker(
            tmp_path, f"s{index}", *sharded(str(source), str(out), 2, "run-1", "--shard-index", str(index))
        )
        assert code == 0, message
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [item["rerun"] for item in manifest["shards"]] == [False, rerun]
    assert manifest["shards"][1]["assumedInQuotes"] is True
    parts = [Path(part["uri"]).read_bytes() for part in manifest["parts"]]
    assert sorted(row[0] for row in rows_of(parts)) == [1, 2, 3]
    assert message["rowsRead"] == 3


def test_a_retried_shard_after_the_others_finished_finalizes_the_same_result(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_bytes(sample(500))
    out = tmp_path / "out"
    args = sharded(str(source), str(out), 3, "run-1", "--dtypes", DTYPES, "--max-reject-ratio", "0.5")
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
        tmp_path, "gz", *sharded(str(source), str(tmp_path / "out"), 2, "r", "--shard-index", "0")
    )
    assert code == 3
    assert message["reason"] == "BadInput" and "gzip object cannot be sharded" in message["message"]
    assert message["message"].startswith("shard 0 of 2: ")  # the CrawlJob's failure names the shard


def test_the_reject_ratio_applies_to_the_whole_object(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_bytes(sample(500))  # 6 of 500 rows rejected: 1.2 %
    out = tmp_path / "out"
    args = sharded(str(source), str(out), 2, "run-1", "--dtypes", DTYPES, "--max-reject-ratio", "0.01")
    assert run_worker(tmp_path, "s0", *args, "--shard-index", "0")[0] == 0  # a shard alone never fails on it
    code, message = run_worker(tmp_path, "s1", *args, "--shard-index", "1")
    assert code == 5 and message["reason"] == "RejectThresholdExceeded", message
    assert json.loads((out / "_manifest.json").read_text())["outcome"] == "Failed"


def test_a_shard_index_outside_the_shards_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["x.csv", "--output", str(tmp_path), "--shards", "2", "--shard-index", "2", "--run-id", "r"])
    assert code == 2 and "--shard-index must be below --shards (2)" in capsys.readouterr().out


def plain(rows: int, start: int = 0) -> bytes:
    """A CSV without rejects: `id,amount` rows."""
    return ("id,amount\n" + "".join(f"{n},{n / 2}\n" for n in range(start, start + rows))).encode()


def s3_names(s3_client: Any, bucket: str, prefix: str) -> set[str]:
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"][len(prefix) :] for item in listed}


def shard_args(bucket: str, key: str, prefix: str, shards: int, index: int, run_id: str) -> list[str]:
    return sharded(f"s3://{bucket}/{key}", f"s3://{bucket}/{prefix}", shards, run_id,
                   "--shard-index", str(index), "--chunk-size-mb", "0.05")  # fmt: skip


@pytest.mark.usefixtures("s3_env")
def test_a_rerun_over_a_previous_runs_prefix_gives_exactly_the_new_runs_result(
    tmp_path: Path, s3_client: Any, bucket: str
) -> None:
    # Run 1: 3 shards of a file with rejects; every shard's report stays under the prefix.
    s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=sample(600))
    for index in range(3):
        code, message = run_worker(
            tmp_path, f"r1-{index}", *shard_args(bucket, "in/data.csv", "out/", 3, index, "uid-1"),
            "--dtypes", DTYPES, "--max-reject-ratio", "0.5",
        )  # fmt: skip
        assert code == 0, message
    assert json.loads(s3_read(s3_client, bucket, "out/_manifest.json"))["rowsRejected"] > 0
    # Run 2 (a re-run: new data, 2 shards). Its first shard finds run 1's reports of shards 1 and 2
    # and must not count them.
    s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=plain(800))
    code, first = run_worker(tmp_path, "r2-0", *shard_args(bucket, "in/data.csv", "out/", 2, 0, "uid-2"))
    assert code == 0 and first["shard"]["finalized"] is False, first
    assert json.loads(s3_read(s3_client, bucket, "out/_manifest.json"))["runId"] == "uid-1"
    code, last = run_worker(tmp_path, "r2-1", *shard_args(bucket, "in/data.csv", "out/", 2, 1, "uid-2"))
    assert code == 0 and last["shard"]["finalized"] is True, last
    rows, manifest, rejects = s3_result(s3_client, bucket, "out/")
    assert rows == [(n, n / 2) for n in range(800)] and rejects == b""
    assert (manifest["runId"], manifest["rowsRead"], manifest["rowsRejected"]) == ("uid-2", 800, 0)
    assert (last["rowsRead"], last["rejectsUri"]) == (800, None)
    # Exactly the new run's objects: no run-1 shard 2, rejects or claim.
    names = s3_names(s3_client, bucket, "out/")
    assert {name.split("/")[0] for name in names} == {
        "_manifest.json", "_finalize-uid-2.json", "shard-00000", "shard-00001",
    }  # fmt: skip
    listed_parts = {name for name in names if "/part-" in name}
    assert listed_parts == {part["uri"].split("/out/", 1)[1] for part in manifest["parts"]}


@pytest.mark.usefixtures("s3_env")
def test_only_the_claiming_shard_finalizes_and_a_retry_of_it_finalizes_again(
    tmp_path: Path, s3_client: Any, bucket: str
) -> None:
    s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=plain(500))
    for index in (0, 1):
        assert (
            run_worker(tmp_path, f"s{index}", *shard_args(bucket, "in/data.csv", "o/", 2, index, "r"))[0] == 0
        )
    claim = json.loads(s3_read(s3_client, bucket, "o/_finalize-r.json"))
    assert (claim["runId"], claim["shardIndex"]) == ("r", 1)
    etag = s3_client.head_object(Bucket=bucket, Key="o/_manifest.json")["ETag"]
    # A second pod of shard 0 (it finds every report, as a shard finishing with the claimer does):
    # the claim names shard 1, so it leaves the finalize alone.
    code, loser = run_worker(tmp_path, "again-0", *shard_args(bucket, "in/data.csv", "o/", 2, 0, "r"))
    assert code == 0 and loser["shard"] == {"index": 0, "count": 2, "finalized": False}
    assert loser["rowsRead"] < 500 and loser["manifestUri"] != f"s3://{bucket}/o/_manifest.json"
    assert s3_client.head_object(Bucket=bucket, Key="o/_manifest.json")["ETag"] == etag
    # Shard 1's pod died mid-finalize and Kubernetes retried index 1: the retry takes the claim over.
    s3_client.delete_object(Bucket=bucket, Key="o/_manifest.json")
    code, retry = run_worker(tmp_path, "again-1", *shard_args(bucket, "in/data.csv", "o/", 2, 1, "r"))
    assert code == 0 and retry["shard"] == {"index": 1, "count": 2, "finalized": True}
    rows, manifest, _ = s3_result(s3_client, bucket, "o/")
    assert rows == [(n, n / 2) for n in range(500)]
    assert (manifest["finalizedBy"], manifest["rowsRead"], retry["rowsRead"]) == (1, 500, 500)


@pytest.mark.parametrize("where", ["s3", "local"])
def test_concurrent_claims_of_one_run_make_exactly_one_finalizer(
    where: str, tmp_path: Path, s3_client: Any, bucket: str
) -> None:
    from crawljob_worker.claim import Outcome, claim_finalize
    from crawljob_worker.uri import parse_location

    location = parse_location(f"s3://{bucket}/c/" if where == "s3" else str(tmp_path / "c"), what="out")
    shards = 8
    barrier = threading.Barrier(shards)

    def claim(index: int) -> Any:
        barrier.wait()
        return claim_finalize(s3_client, location, "run-7", index)

    with ThreadPoolExecutor(shards) as pool:
        claims = list(pool.map(claim, range(shards)))
    winners = [index for index, item in enumerate(claims) if item.outcome is Outcome.CLAIMED]
    assert len(winners) == 1
    assert all(item.holder == winners[0] for item in claims)
    assert sum(item.outcome is Outcome.LOST for item in claims) == shards - 1


@pytest.mark.usefixtures("s3_env")
def test_two_shard_processes_finishing_together_finalize_once(
    tmp_path: Path, s3_client: Any, bucket: str, s3_env: dict[str, str]
) -> None:
    s3_client.put_object(Bucket=bucket, Key="in/tiny.csv", Body=plain(40))
    for round_ in range(3):
        run_id, prefix = f"together-{round_}", f"t{round_}/"
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "crawljob_worker",
                    *shard_args(bucket, "in/tiny.csv", prefix, 2, index, run_id),
                    "--termination-log",
                    str(tmp_path / f"{run_id}-{index}"),
                ],
                env={**os.environ, **s3_env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for index in range(2)
        ]
        assert [process.wait(timeout=120) for process in processes] == [0, 0]
        messages = [json.loads((tmp_path / f"{run_id}-{index}").read_text()) for index in range(2)]
        finalizers = [message["shard"]["index"] for message in messages if message["shard"]["finalized"]]
        assert len(finalizers) == 1, messages
        rows, manifest, _ = s3_result(s3_client, bucket, prefix)
        assert rows == [(n, n / 2) for n in range(40)] and manifest["finalizedBy"] == finalizers[0]
        assert messages[finalizers[0]]["rowsRead"] == 40


@pytest.mark.usefixtures("s3_env")
async def test_shards_sum_their_progress_into_the_crawljobs_status(
    tmp_path: Path, s3_client: Any, bucket: str, emulator: tuple[Emulator, str], kube_client: kube.KubeClient
) -> None:
    await kube_client.create(
        kube.CRAWLJOBS, "default",
        {"apiVersion": resource.API_VERSION, "kind": resource.KIND, "metadata": {"name": "sharded"},
         "spec": {"source": {"bucket": bucket, "key": "in/data.csv"}}},
    )  # fmt: skip
    data = plain(3000)
    s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=data)
    report = ["--name", "sharded", "--namespace", "default", "--kube-server", emulator[1]]
    seen = []
    for index in range(3):
        args = shard_args(bucket, "in/data.csv", "p/", 3, index, "uid-1")
        code, message = await asyncio.to_thread(run_worker, tmp_path, f"s{index}", *args, *report)
        assert code == 0, message
        seen.append((await kube_client.get(kube.CRAWLJOBS, "default", "sharded"))["status"]["progress"])
    # While the crawl runs (after shard 0 alone) the CrawlJob already shows a share of the object.
    assert seen[0]["bytesTotal"] == len(data) and 30 <= int(seen[0]["percent"].rstrip("%")) < 40
    assert seen[0]["rowsRead"] == seen[0]["shards"]["0"]["rowsRead"] > 0
    progress = seen[-1]
    assert (progress["bytesRead"], progress["rowsRead"], progress["percent"]) == (len(data), 3000, "100%")
    assert sorted(progress["shards"]) == ["0", "1", "2"]
    assert {entry["runId"] for entry in progress["shards"].values()} == {"uid-1"}
    assert sum(entry["rowsRead"] for entry in progress["shards"].values()) == 3000


def test_a_store_without_conditional_writes_falls_back_to_finalizing_without_a_claim(
    tmp_path: Path, s3_client: Any, bucket: str, local_s3: Any, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    proxy = ConditionalWritesProxy(local_s3.endpoint)
    for name, value in {**local_s3.environment(), "AWS_ENDPOINT_URL_S3": proxy.start()}.items():
        monkeypatch.setenv(name, value)
    try:
        s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=plain(300))
        messages = []
        for name, index in (("s0", 0), ("s1", 1), ("again-0", 0)):
            code, message = run_worker(
                tmp_path, name, *shard_args(bucket, "in/data.csv", "nc/", 2, index, "r")
            )
            assert code == 0, message
            messages.append(message)
    finally:
        proxy.stop()
    # Every shard that found both reports finalized (the old behaviour), with the same result.
    assert [message["shard"]["finalized"] for message in messages] == [False, True, True]
    assert proxy.refused == 2 and "does not implement conditional writes" in caplog.text
    rows, manifest, _ = s3_result(s3_client, bucket, "nc/")
    assert rows == [(n, n / 2) for n in range(300)] and manifest["finalizedBy"] == 0
    assert not any(name.startswith("_finalize-") for name in s3_names(s3_client, bucket, "nc/"))


def test_shards_that_are_not_last_read_no_reports(
    tmp_path: Path, s3_client: Any, bucket: str, local_s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 24 shards finishing in index order (as per-shard Jobs made in order tend to): each shard but
    # the last sees a shard prefix missing in one LIST and reads no report; the last reads the 24.
    # Before, every shard read all 24 reports (576 GETs here; ~10^6 for 1,000 shards).
    shards = 24
    proxy = ConditionalWritesProxy(local_s3.endpoint, conflicts=0)
    for name, value in {**local_s3.environment(), "AWS_ENDPOINT_URL_S3": proxy.start()}.items():
        monkeypatch.setenv(name, value)
    try:
        s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=plain(400))
        messages = [
            run_worker(tmp_path, f"s{index}", *shard_args(bucket, "in/data.csv", "many/", shards, index, "r"))
            for index in range(shards)
        ]
    finally:
        proxy.stop()
    assert all(code == 0 for code, _ in messages), messages
    assert [message["shard"]["finalized"] for _, message in messages] == [False] * (shards - 1) + [True]
    rows, manifest, _ = s3_result(s3_client, bucket, "many/")
    assert rows == [(n, n / 2) for n in range(400)] and manifest["rowsRead"] == 400
    report_reads = [
        path for method, path in proxy.requests if method == "GET" and path.endswith("/_shard.json")
    ]
    assert len(report_reads) == shards, len(report_reads)


def test_a_one_shard_run_over_a_sharded_runs_prefix_leaves_only_its_own_objects(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_bytes(plain(400))
    out = tmp_path / "out"
    for index in range(3):
        args = sharded(str(source), str(out), 3, "a", "--shard-index", str(index))
        assert run_worker(tmp_path, f"s{index}", *args)[0] == 0
    assert {path.name for path in out.iterdir()} >= {"shard-00002", "_finalize-a.json", "_manifest.json"}
    code, message = run_worker(tmp_path, "one", str(source), "--output", str(out))  # spec.shards back to 1
    assert code == 0 and message["rowsRead"] == 400
    assert sorted(path.name for path in out.iterdir()) == ["_manifest.json", "part-00000.parquet"]


def test_a_claim_racing_another_write_is_retried_until_s3_decides(
    tmp_path: Path, bucket: str, local_s3: Any
) -> None:
    from crawljob_worker.claim import CONFLICT_RETRIES, Outcome, claim_finalize
    from crawljob_worker.errors import WorkerError
    from crawljob_worker.source import s3_client as worker_s3_client
    from crawljob_worker.uri import parse_location

    location = parse_location(f"s3://{bucket}/race/", what="out")
    proxy = ConditionalWritesProxy(local_s3.endpoint, conflicts=2)
    environment = {**local_s3.environment(), "AWS_ENDPOINT_URL_S3": proxy.start()}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in environment.items():
                patch.setenv(name, value)
            client = worker_s3_client(connections=1)
            claim = claim_finalize(client, location, "r", 3)  # 409, 409, then created
            assert (claim.outcome, claim.holder, proxy.refused) == (Outcome.CLAIMED, 3, 2)
            proxy.conflicts, proxy.refused = CONFLICT_RETRIES + 1, 0
            with pytest.raises(WorkerError) as failed:  # a conflict that never settles: retryable
                claim_finalize(client, location, "other", 1)
            assert failed.value.reason == "Transient" and proxy.refused == CONFLICT_RETRIES + 1
    finally:
        proxy.stop()
