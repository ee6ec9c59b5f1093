"""Event storm: 2,000 deliveries (20% redeliveries) posted concurrently while the API misbehaves.

The emulator refuses ~7% of CrawlJob creates before storing (500/503), stores then answers 503
for ~3%, delays ~10% (a few beyond the receiver's API timeout, stored after it gave up).
Invariants: every delivery that got a 2xx has exactly one CrawlJob; every object without a
CrawlJob had only 5xx answers; no object has two CrawlJobs; nothing but 202 and 503 is answered.
Then the 5xx deliveries are retried, as SNS/EventBridge would, until every object has its CrawlJob.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
from typing import Any

import aiohttp
import pytest
from receiver_faults import Fault, serve_faulty_emulator

from crawljob import kube
from crawljob.receiver.app import create_app
from crawljob.receiver.settings import ReceiverSettings
from crawljob.resource import ObjectRef, crawljob_name
from fakes.waiting import wait_for

NAMESPACE = "storm"
DELIVERIES = 2000
REDELIVERY_SHARE = 0.2
CONCURRENCY = 16


def delivery(index: int) -> dict[str, Any]:
    """An S3 notification for object *index*; some keys need URL-decoding."""
    key = f"storm/day {index % 7}/reading+{index}.csv"
    raw_key = key.replace("+", "%2B").replace(" ", "+")
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventTime": "2026-11-28T10:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "storm-bucket"},
                    "object": {"key": raw_key, "size": 100 + index, "eTag": f"{index:032x}"},
                },
            }
        ]
    }


def expected_name(index: int) -> str:
    key = f"storm/day {index % 7}/reading+{index}.csv"
    return crawljob_name(ObjectRef(bucket="storm-bucket", key=key, etag=f"{index:032x}"))


@pytest.mark.slow
async def test_event_storm_loses_nothing_acknowledged_and_duplicates_nothing(aiohttp_server: Any) -> None:
    rng = random.Random(20261128)

    def plan(body: dict[str, Any]) -> Fault:
        draw = rng.random()
        if draw < 0.04:
            return Fault(before=503)
        if draw < 0.07:
            return Fault(before=500)
        if draw < 0.10:
            return Fault(after=503)
        if draw < 0.19:
            return Fault(delay=rng.uniform(0.01, 0.1))
        if draw < 0.20:
            return Fault(delay=1.5)  # past the receiver's 1 s API timeout: stored after it gave up
        return Fault()

    objects = int(DELIVERIES * (1 - REDELIVERY_SHARE))
    order = list(range(objects)) + [rng.randrange(objects) for _ in range(DELIVERIES - objects)]
    rng.shuffle(order)
    answers: dict[int, list[int]] = collections.defaultdict(list)  # object → statuses of its deliveries
    acknowledged: set[int] = set()

    async with serve_faulty_emulator(plan) as (emulator, url):
        settings = ReceiverSettings(kube_server=url, namespace=NAMESPACE, kube_timeout=1.0)
        server = await aiohttp_server(create_app(settings))
        semaphore = asyncio.Semaphore(CONCURRENCY)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(str(server.make_url("/")), connector=connector) as session:

            async def post(index: int) -> int:
                async with (
                    semaphore,
                    session.post("/v1/trigger", data=json.dumps(delivery(index))) as response,
                ):
                    await response.read()
                    if response.status == 503:
                        assert response.headers["Retry-After"]
                    return response.status

            statuses = await asyncio.gather(*(post(index) for index in order))
            for index, status in zip(order, statuses, strict=True):
                answers[index].append(status)
                if 200 <= status < 300:
                    acknowledged.add(index)

            async with kube.KubeClient(kube.Connection(server=url)) as api:

                async def settled() -> bool:
                    return emulator.in_flight == 0

                await wait_for(settled, timeout=10, what="delayed creates to land")
                stored = await api.list(kube.CRAWLJOBS, NAMESPACE)
                names = collections.Counter(item["metadata"]["name"] for item in stored)
                identities = collections.Counter(
                    (
                        item["spec"]["source"]["bucket"],
                        item["spec"]["source"]["key"],
                        item["spec"]["source"]["eTag"],
                    )
                    for item in stored
                )
                with_crawljob = {index for index in range(objects) if expected_name(index) in names}
                all_statuses = collections.Counter(statuses)
                acked_lost = acknowledged - with_crawljob
                without = set(range(objects)) - with_crawljob
                stored_but_5xx = with_crawljob - acknowledged

                # Retry every object that never got a 2xx, as senders do on 5xx, until all are acknowledged.
                rounds = 0
                pending = sorted(set(range(objects)) - acknowledged)
                while pending and rounds < 20:
                    rounds += 1
                    retried = await asyncio.gather(*(post(index) for index in pending))
                    pending = [index for index, status in zip(pending, retried, strict=True) if status >= 300]
                await wait_for(settled, timeout=10, what="delayed creates to land")
                final = await api.list(kube.CRAWLJOBS, NAMESPACE)

    print(
        f"\nstorm: {DELIVERIES} deliveries of {objects} objects ({DELIVERIES - objects} redeliveries); "
        f"answers {dict(sorted(all_statuses.items()))}; injected {dict(sorted(emulator.injected.items()))}\n"
        f"storm: {len(acknowledged)} objects acknowledged (2xx), {len(stored)} CrawlJobs stored, "
        f"{len(stored_but_5xx)} stored although every delivery got 5xx, {len(without)} without CrawlJob "
        f"(all 5xx), {len(acked_lost)} acknowledged but lost, "
        f"{sum(count - 1 for count in identities.values())} duplicates\n"
        f"storm: after {rounds} retry rounds of the 5xx objects: {len(final)} CrawlJobs for {objects} objects"
    )
    assert set(all_statuses) <= {202, 503}, all_statuses
    assert acked_lost == set()
    assert all(count == 1 for count in names.values())
    assert all(count == 1 for count in identities.values())
    assert len(stored) == len(with_crawljob)
    for index in without:
        assert all(status == 503 for status in answers[index]), (index, answers[index])
    assert all_statuses[503] > 0, "the storm injected no failures: the test proves nothing"
    assert not pending
    assert len(final) == objects
