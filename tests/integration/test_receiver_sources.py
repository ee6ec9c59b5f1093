"""Receiver routing: a webhook event of an object matched by a CrawlSource gets its template and label."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from crawljob import kube, resource, sources
from crawljob.local.emulator import Emulator
from crawljob.receiver.app import create_app
from crawljob.receiver.settings import ReceiverSettings
from fakes.stack import wait_until

NAMESPACE = "crawl"
pytestmark = pytest.mark.timeout(60)


def source_body(name: str, prefix: str, **template: Any) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": sources.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"bucket": "landing", "prefix": prefix, "interval": "0", "template": template},
    }


def s3_event(key: str) -> str:
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "landing"}, "object": {"key": key, "eTag": "e" + key[-6:], "size": 3}},
    }
    return json.dumps({"Records": [record]})


async def post(client: TestClient[Any, Any], kube_client: kube.KubeClient, key: str) -> dict[str, Any]:
    response = await client.post("/v1/trigger", data=s3_event(key))
    assert response.status == 202, await response.text()
    (item,) = (await response.json())["crawljobs"]
    assert item["status"] == "created"
    return await kube_client.get(kube.CRAWLJOBS, NAMESPACE, item["name"])


async def test_the_most_specific_source_template_applies_and_unmatched_events_keep_the_defaults(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, aiohttp_client: Any
) -> None:
    await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, source_body("all", "", maxRejectRatio=0.2))
    invoices = source_body(
        "invoices", "in/invoices/", output={"format": "jsonl"}, csv={"delimiter": ";"}, shards=2
    )
    await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, invoices)
    broken = source_body("broken", "in/")
    broken["spec"]["interval"] = "soon"  # invalid: ignored for routing, never half-applied
    await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, broken)
    settings = ReceiverSettings(kube_server=emulator[1], namespace=NAMESPACE)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))

    specific = await post(client, kube_client, "in/invoices/2026-12.csv")
    assert specific["metadata"]["labels"][sources.LABEL_SOURCE] == "invoices"
    assert specific["spec"]["output"] == {"format": "jsonl"}
    assert specific["spec"]["csv"] == {"delimiter": ";"}
    assert specific["spec"]["shards"] == 2
    assert specific["spec"]["source"]["key"] == "in/invoices/2026-12.csv"

    broad = await post(client, kube_client, "in/orders/1.csv")
    assert broad["metadata"]["labels"][sources.LABEL_SOURCE] == "all"
    assert broad["spec"]["maxRejectRatio"] == 0.2
    assert "output" not in broad["spec"]


async def test_sources_created_or_deleted_after_startup_are_followed(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, aiohttp_client: Any
) -> None:
    settings = ReceiverSettings(kube_server=emulator[1], namespace=NAMESPACE)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    plain = await post(client, kube_client, "in/a.csv")
    assert sources.LABEL_SOURCE not in plain["metadata"]["labels"]
    assert set(plain["spec"]) == {"source"}  # today's chart-wide behaviour: the operator's defaults

    await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, source_body("feed", "in/", maxRejectRatio=0.5))
    counter = iter(range(1000))

    async def routed() -> bool:
        crawljob = await post(client, kube_client, f"in/b{next(counter):03}.csv")
        return crawljob["metadata"]["labels"].get(sources.LABEL_SOURCE) == "feed"

    await wait_until(routed, 30, "the receiver to see the new source")
    await kube_client.delete(kube.CRAWLSOURCES, NAMESPACE, "feed")

    async def unrouted() -> bool:
        crawljob = await post(client, kube_client, f"in/c{next(counter):03}.csv")
        return sources.LABEL_SOURCE not in crawljob["metadata"]["labels"]

    await wait_until(unrouted, 30, "the receiver to drop the deleted source")
