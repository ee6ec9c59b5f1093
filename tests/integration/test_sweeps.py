"""CrawlSource sweeps: a real `crawljob operator` process, the emulator, moto's S3 (and the receiver)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crawljob import kube, resource, sources
from crawljob.local.emulator import Emulator
from crawljob.receiver.app import create_app
from crawljob.receiver.settings import ReceiverSettings
from fakes.stack import NAMESPACE, count_job_creations, running_operator, running_runner, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("s3_env")]


def source_body(name: str, bucket: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": sources.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"bucket": bucket, **spec},
    }


def put(s3_client: Any, bucket: str, key: str) -> dict[str, Any]:
    """Upload a small CSV; the object's HEAD (ETag, VersionId, LastModified)."""
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"a,b\n1,2\n")
    head: dict[str, Any] = s3_client.head_object(Bucket=bucket, Key=key)
    return head


def webhook_name(bucket: str, key: str, head: dict[str, Any]) -> str:
    """The name the receiver gives this object version's event."""
    ref = resource.ObjectRef(bucket, key, version_id=head.get("VersionId"), etag=head["ETag"].strip('"'))
    return resource.crawljob_name(ref)


async def crawljob_names(client: kube.KubeClient) -> set[str]:
    return {item["metadata"]["name"] for item in await client.list(kube.CRAWLJOBS, NAMESPACE)}


async def source_status(client: kube.KubeClient, name: str) -> dict[str, Any]:
    body = await client.get(kube.CRAWLSOURCES, NAMESPACE, name)
    status: dict[str, Any] = body.get("status") or {}
    return status


async def request_sweep(client: kube.KubeClient, name: str) -> dict[str, Any]:
    """Set the crawljob.io/sweep annotation and wait until the operator has swept for it."""
    token = uuid.uuid4().hex[:8]
    patch = {"metadata": {"annotations": {sources.ANNOTATION_SWEEP: token}}}
    await client.patch(kube.CRAWLSOURCES, NAMESPACE, name, patch)

    async def swept() -> dict[str, Any] | None:
        status = await source_status(client, name)
        return status if status.get("sweepToken") == token else None

    result: dict[str, Any] = await wait_until(swept, 30, f"the sweep {token} of {name}")
    return result


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(item for item in status.get("conditions") or [] if item["type"] == type_)


async def source_events(client: kube.KubeClient, name: str) -> list[dict[str, Any]]:
    return [
        event
        for event in await client.list(kube.EVENTS, NAMESPACE)
        if (event.get("involvedObject") or {}).get("kind") == sources.KIND
        and event["involvedObject"]["name"] == name
    ]


async def test_a_backfill_creates_one_crawljob_per_object_in_capped_passes_under_backpressure(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    expected = {
        webhook_name(bucket, f"in/ok-{i}.csv", put(s3_client, bucket, f"in/ok-{i}.csv")) for i in range(7)
    }
    put(s3_client, bucket, "in/notes.json")  # another suffix
    put(s3_client, bucket, "elsewhere/ok-1.csv")  # another prefix
    s3_client.put_object(Bucket=bucket, Key="in/folder/", Body=b"")  # folder placeholder
    jobs: Counter[str] = Counter()
    counter = asyncio.create_task(count_job_creations(kube_client, jobs))
    body = source_body("backfill", bucket, prefix="in/", suffixes=[".csv"], interval="1h")
    async with running_operator(emulator[1], tmp_path / "operator.log", **{"sweep-max-create": 3}):
        await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, body)

        async def three() -> bool:
            return len(await crawljob_names(kube_client)) >= 3

        await wait_until(three, 30, "the first capped pass")
        await asyncio.sleep(3)  # no runner: the three stay unfinished, so no further pass may create
        assert len(await crawljob_names(kube_client)) == 3
        status = await source_status(kube_client, "backfill")
        assert condition(status, "Reconciling")["status"] == "True"
        assert status.get("resumeAfter") and "watermark" not in status
        async with running_runner(kube_client):

            async def all_swept() -> dict[str, Any] | None:
                status = await source_status(kube_client, "backfill")
                return status if status.get("lastSweepTime") else None

            status = await wait_until(all_swept, 60, "the backfill to complete")
    counter.cancel()
    assert await crawljob_names(kube_client) == expected
    assert status["crawljobsCreatedTotal"] == 7
    assert condition(status, "Ready")["status"] == "True"
    assert status["watermark"] and not status.get("resumeAfter")
    assert jobs and max(jobs.values()) == 1  # no duplicate Job
    for item in await kube_client.list(kube.CRAWLJOBS, NAMESPACE):
        assert item["metadata"]["labels"][sources.LABEL_SOURCE] == "backfill"
        assert not item["metadata"].get("ownerReferences")  # deleting the source keeps its history
    assert any(
        event["reason"] == "CrawlJobsCreated" for event in await source_events(kube_client, "backfill")
    )


async def test_a_lost_webhook_is_recovered_by_the_next_periodic_sweep(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    first = webhook_name(bucket, "in/a.csv", put(s3_client, bucket, "in/a.csv"))
    async with running_operator(emulator[1], tmp_path / "operator.log"):
        await kube_client.create(
            kube.CRAWLSOURCES, NAMESPACE, source_body("feed", bucket, prefix="in/", interval="1s")
        )

        async def created(name: str) -> bool:
            return name in await crawljob_names(kube_client)

        await wait_until(lambda: created(first), 30, "the first sweep")
        # An upload whose webhook never arrives:
        lost = webhook_name(bucket, "in/b.csv", put(s3_client, bucket, "in/b.csv"))
        await wait_until(lambda: created(lost), 30, "the next sweep to find the object")

        async def counted() -> dict[str, Any] | None:
            status = await source_status(kube_client, "feed")
            return status if status.get("crawljobsCreatedTotal") == 2 else None

        status = await wait_until(counted, 10, "the status of the sweep")
    assert await crawljob_names(kube_client) == {first, lost}
    assert status["lastSweepTime"] and status["nextSweepTime"] and status["watermark"]


@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
async def test_a_webhook_and_a_sweep_of_one_object_make_one_crawljob_in_either_order(
    versioned: bool,
    emulator: tuple[Emulator, str],
    kube_client: kube.KubeClient,
    s3_client: Any,
    bucket: str,
    aiohttp_client: Any,
    tmp_path: Path,
) -> None:
    if versioned:
        s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        put(s3_client, bucket, "in/first.csv")  # an older version of the same key: not the current one
    heads = {key: put(s3_client, bucket, key) for key in ("in/first.csv", "in/second.csv")}
    assert bool(heads["in/first.csv"].get("VersionId")) is versioned
    receiver = await aiohttp_client(
        create_app(ReceiverSettings(kube_server=emulator[1], namespace=NAMESPACE))
    )

    async def webhook(key: str) -> dict[str, Any]:
        head = heads[key]
        obj: dict[str, Any] = {"key": key, "size": 8, "eTag": head["ETag"].strip('"'), "sequencer": "0A1B2C"}
        if head.get("VersionId"):
            obj["versionId"] = head["VersionId"]
        record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": obj}}
        response = await receiver.post("/v1/trigger", data=json.dumps({"Records": [record]}))
        assert response.status == 202, await response.text()
        (item,) = (await response.json())["crawljobs"]
        return dict(item)

    async with running_operator(emulator[1], tmp_path / "operator.log"):
        await kube_client.create(
            kube.CRAWLSOURCES, NAMESPACE, source_body("feed", bucket, prefix="in/", interval="0")
        )
        # Webhook first, then the sweep: the sweep finds the CrawlJob and creates none.
        assert (await webhook("in/first.csv"))["status"] == "created"

        status = await request_sweep(kube_client, "feed")
        assert status["crawljobsCreated"] == 1  # in/second.csv only
        # Sweep first, then the webhook: the receiver answers "duplicate".
        assert (await webhook("in/second.csv"))["status"] == "duplicate"
    names = await crawljob_names(kube_client)
    assert names == {webhook_name(bucket, key, head) for key, head in heads.items()}


async def test_a_garbage_collected_crawljob_is_not_run_again(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    name = webhook_name(bucket, "in/ok-5.csv", put(s3_client, bucket, "in/ok-5.csv"))
    await asyncio.sleep(1.5)  # older than the lookback at the first sweep
    jobs: Counter[str] = Counter()
    counter = asyncio.create_task(count_job_creations(kube_client, jobs))
    flags = {"finished-ttl-seconds": 3, "sweep-lookback-seconds": 1}
    async with running_runner(kube_client), running_operator(emulator[1], tmp_path / "operator.log", **flags):
        await kube_client.create(
            kube.CRAWLSOURCES, NAMESPACE, source_body("feed", bucket, prefix="in/", interval="1s")
        )

        async def collected() -> bool:
            return bool(jobs) and name not in await crawljob_names(kube_client)

        await wait_until(collected, 60, "the CrawlJob to run and be garbage-collected")
        for _ in range(2):
            status = await request_sweep(kube_client, "feed")
            assert status["objectsListed"] == 1 and status["objectsMatched"] == 0
    counter.cancel()
    assert name not in await crawljob_names(kube_client)
    assert jobs == Counter({name: 1})


async def test_a_lookback_reaching_the_ttl_is_refused_at_start(
    tmp_path: Path, emulator: tuple[Emulator, str]
) -> None:
    flags = {"finished-ttl-seconds": 60, "sweep-lookback-seconds": 60}
    async with running_operator(emulator[1], tmp_path / "operator.log", **flags) as operator:
        assert operator.process is not None
        assert await asyncio.wait_for(operator.process.wait(), 30) == 2
    assert "must be shorter than --finished-ttl-seconds" in (tmp_path / "operator.log").read_text()


async def test_a_suspended_source_is_not_swept_until_resumed(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    name = webhook_name(bucket, "in/a.csv", put(s3_client, bucket, "in/a.csv"))
    body = source_body("feed", bucket, prefix="in/", interval="1s", suspend=True)
    async with running_operator(emulator[1], tmp_path / "operator.log"):
        await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, body)

        async def suspended() -> dict[str, Any] | None:
            status = await source_status(kube_client, "feed")
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
            return status if ready and ready["reason"] == "Suspended" else None

        status = await wait_until(suspended, 30, "the Suspended status")
        annotation = {"metadata": {"annotations": {sources.ANNOTATION_SWEEP: "ignored"}}}
        await kube_client.patch(kube.CRAWLSOURCES, NAMESPACE, "feed", annotation)
        await asyncio.sleep(3)
        assert await crawljob_names(kube_client) == set()
        assert not status.get("nextSweepTime")
        await kube_client.patch(kube.CRAWLSOURCES, NAMESPACE, "feed", {"spec": {"suspend": False}})

        async def resumed() -> bool:
            return name in await crawljob_names(kube_client)

        await wait_until(resumed, 30, "the sweep after resuming")


async def test_an_annotation_sweeps_at_once_between_intervals(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    async with running_operator(emulator[1], tmp_path / "operator.log"):
        await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, source_body("feed", bucket, interval="1h"))

        async def first_sweep() -> dict[str, Any] | None:
            status = await source_status(kube_client, "feed")
            return status if status.get("lastSweepTime") else None

        status = await wait_until(first_sweep, 30, "the first sweep")
        assert status["crawljobsCreated"] == 0
        name = webhook_name(bucket, "late.csv", put(s3_client, bucket, "late.csv"))
        status = await request_sweep(kube_client, "feed")
        assert status["crawljobsCreated"] == 1
        assert name in await crawljob_names(kube_client)


async def test_a_missing_bucket_stalls_the_source_with_a_warning_event(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    async with running_operator(emulator[1], tmp_path / "operator.log"):
        await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, source_body("gone", "no-such-bucket-here"))

        async def stalled() -> dict[str, Any] | None:
            status = await source_status(kube_client, "gone")
            items = {c["type"]: c for c in status.get("conditions") or []}
            return status if items.get("Stalled", {}).get("status") == "True" else None

        status = await wait_until(stalled, 30, "Stalled")
    assert condition(status, "Stalled")["reason"] == "NoSuchBucket"
    assert condition(status, "Ready")["status"] == "False"
    events = await source_events(kube_client, "gone")
    assert any(event["reason"] == "SweepFailed" and event["type"] == "Warning" for event in events)


async def test_history_limits_never_collect_a_crawljob_a_sweep_still_looks_at(
    kube_client: kube.KubeClient,
) -> None:
    """GC (the operator's own collect_garbage) keeps CrawlJobs created at or after their source's
    watermark, even with a history limit of 0; older ones, and ones of no source, go."""
    from crawljob.operator import resync
    from crawljob.operator.settings import OperatorSettings
    from crawljob.operator.view import State

    source = source_body("feed", "landing", prefix="in/")
    created = await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, source)
    state = State(
        settings=OperatorSettings(namespace=NAMESPACE, successful_history_limit=0), client=kube_client
    )
    finished = {"phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z"}
    bodies = {}
    for key in ("in/recent.csv", "in/old.csv", "out/other.csv"):
        body = resource.crawljob_manifest(resource.ObjectRef("landing", key, etag="e"), NAMESPACE)
        made = await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        await kube_client.patch(
            kube.CRAWLJOBS, NAMESPACE, made["metadata"]["name"], {"status": finished}, "status"
        )
        bodies[key] = made["metadata"]["name"]
    items = await kube_client.list(kube.CRAWLJOBS, NAMESPACE)
    for item in items:
        stamp = (
            "2026-06-01T00:00:00Z"
            if item["metadata"]["name"] == bodies["in/recent.csv"]
            else "2026-01-01T00:00:00Z"
        )
        item["metadata"]["creationTimestamp"] = stamp  # as the API server would have stamped them
        state.remember_crawljob(item)
    # No sweep completed yet: every CrawlJob of the source is kept.
    state.sources[(NAMESPACE, "feed")] = created
    await resync.collect_garbage(state)
    assert await crawljob_names(kube_client) == {bodies["in/recent.csv"], bodies["in/old.csv"]}
    # With a watermark: only the CrawlJob created at or after it stays.
    state.sources[(NAMESPACE, "feed")] = {**created, "status": {"watermark": "2026-03-01T00:00:00Z"}}
    await resync.collect_garbage(state)
    assert await crawljob_names(kube_client) == {bodies["in/recent.csv"]}
