"""End to end on the local stack: S3 event → receiver → CrawlJob → operator → Job → runner → worker → status.

The same code path `crawljob run` uses: receiver and operator are child processes started by their
commands, the worker runs as a local process for each Job, S3 is moto's server, the API the emulator.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import pytest_asyncio

from crawljob import kube, resource, sources
from crawljob.local.sample import generate_csv
from crawljob.local.stack import (
    SAMPLE_PREFIX,
    SAMPLE_SOURCE,
    Stack,
    StackSettings,
    backfill_demo,
    local_stack,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings = StackSettings(work_dir=tmp_path_factory.mktemp("stack"), max_active=4)
    async with local_stack(settings) as running:
        yield running


def _parquet_rows(stack: Stack, output_uri: str) -> int:
    bucket, _, prefix = output_uri.removeprefix("s3://").partition("/")
    listing = stack.s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    parts = [item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".parquet")]
    assert parts, f"no Parquet parts under {output_uri}: {[i['Key'] for i in listing.get('Contents', [])]}"
    total = 0
    for key in parts:
        body = stack.s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        total += pq.read_table(io.BytesIO(body)).num_rows
    return total


async def test_uploaded_csv_is_crawled_to_parquet_with_its_true_row_count(
    stack: Stack, tmp_path: Path
) -> None:
    sample = generate_csv(tmp_path / "readings.csv", 3 * 2**20, seed=11)
    stack.upload(sample.path, "e2e/site 1/readings+march.csv")
    name = await stack.trigger("e2e/site 1/readings+march.csv")

    crawljob = await stack.wait_finished(name, timeout=180)

    status: dict[str, Any] = crawljob["status"]
    assert status["phase"] == "Succeeded", status
    assert crawljob["spec"]["source"]["key"] == "e2e/site 1/readings+march.csv"
    result = status["result"]
    assert result["rowsRead"] == sample.rows
    assert result["rowsWritten"] == sample.rows
    assert result["rowsRejected"] == 0
    assert _parquet_rows(stack, result["outputUri"]) == sample.rows
    assert status["jobName"] == name


async def test_redelivered_event_creates_no_second_crawljob(stack: Stack, tmp_path: Path) -> None:
    sample = generate_csv(tmp_path / "twice.csv", 20_000, seed=12)
    head = stack.upload(sample.path, "e2e/twice.csv")
    event = stack.s3_event("e2e/twice.csv", etag=head["ETag"], size=sample.size)

    first_status, first = await stack.post_event(event)
    second_status, second = await stack.post_event(event)

    assert (first_status, second_status) == (202, 202)
    assert "created" in str(first).lower()
    assert "duplicate" in str(second).lower()
    names = [
        item["metadata"]["name"] for item in await stack.crawljobs() if "twice" in item["metadata"]["name"]
    ]
    assert len(names) == 1
    crawljob = await stack.wait_finished(names[0], timeout=120)
    assert crawljob["status"]["result"]["rowsRead"] == sample.rows


async def test_missing_object_fails_readably_and_the_next_event_still_succeeds(
    stack: Stack, tmp_path: Path
) -> None:
    missing = await stack.trigger("e2e/never-uploaded.csv")
    failed = await stack.wait_finished(missing, timeout=120)

    assert failed["status"]["phase"] == "Failed"
    message = failed["status"]["message"].lower()
    assert "never-uploaded.csv" in message or "not found" in message or "does not exist" in message, message

    sample = generate_csv(tmp_path / "after.csv", 50_000, seed=13)
    stack.upload(sample.path, "e2e/after-failure.csv")
    name = await stack.trigger("e2e/after-failure.csv")
    crawljob = await stack.wait_finished(name, timeout=120)
    assert crawljob["status"]["phase"] == "Succeeded"
    assert crawljob["status"]["result"]["rowsRead"] == sample.rows


async def test_backfill_crawls_files_already_in_the_bucket_without_any_webhook(stack: Stack) -> None:
    """`crawljob run --backfill`: files uploaded before the sample CrawlSource exists are crawled by its
    first sweep, with the source's template and label; no event is posted for them."""
    assert await backfill_demo(stack, 2, 0.05)
    crawljobs = [
        item
        for item in await stack.crawljobs()
        if item["spec"]["source"]["key"].startswith(f"{SAMPLE_PREFIX}backfill/")
    ]
    assert len(crawljobs) == 2
    for item in crawljobs:
        assert item["metadata"]["labels"][sources.LABEL_SOURCE] == SAMPLE_SOURCE
        assert item["spec"]["output"] == {"format": "parquet"}
        assert item["status"]["phase"] == "Succeeded"
    status = (await stack.client.get(kube.CRAWLSOURCES, stack.settings.namespace, SAMPLE_SOURCE))["status"]
    assert status["crawljobsCreatedTotal"] == 2


async def test_a_sharded_crawljob_runs_an_indexed_job_with_one_result(stack: Stack, tmp_path: Path) -> None:
    sample = generate_csv(tmp_path / "sharded.csv", 2 * 2**20, seed=14)
    head = stack.upload(sample.path, "e2e/sharded.csv")
    body = resource.crawljob_manifest(
        resource.ObjectRef(
            bucket=stack.settings.input_bucket, key="e2e/sharded.csv", etag=head["ETag"], size=sample.size
        ),
        stack.settings.namespace,
    )
    body["spec"]["shardSizeMb"] = 1  # type: ignore[index]
    await stack.client.create(kube.CRAWLJOBS, stack.settings.namespace, body)
    name = str(body["metadata"]["name"])  # type: ignore[index]

    crawljob = await stack.wait_finished(name, timeout=240)

    status = crawljob["status"]
    assert status["phase"] == "Succeeded", status
    job = await stack.client.get(kube.JOBS, stack.settings.namespace, status["jobName"])
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    pods = await stack.client.list(kube.PODS, stack.settings.namespace, {"job-name": status["jobName"]})
    messages = [pod["status"]["containerStatuses"][0]["state"]["terminated"].get("message") for pod in pods]
    assert status["result"]["rowsRead"] == status["result"]["rowsWritten"] == sample.rows, (status, messages)
    assert status["result"]["manifestUri"].endswith(f"{name}/_manifest.json")
    assert _parquet_rows(stack, status["result"]["outputUri"]) == sample.rows
    # Both shards reported into one status.progress, tagged with the run the operator passed.
    run_id = f"{crawljob['metadata']['uid']}-1"
    progress = status["progress"]
    assert {key: entry["runId"] for key, entry in progress["shards"].items()} == {"0": run_id, "1": run_id}
    assert (progress["bytesRead"], progress["rowsRead"], progress["percent"]) == (
        sample.size,
        sample.rows,
        "100%",
    )
