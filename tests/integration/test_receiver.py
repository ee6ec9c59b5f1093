"""The receiver over real HTTP against the Kubernetes API emulator: formats, answers, duplicates."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from crawljob_operator import kube
from crawljob_operator.config import ReceiverSettings
from crawljob_operator.local.emulator import Emulator
from crawljob_operator.receiver import create_app

EVENTS = Path(__file__).parent.parent / "data" / "events"
NAMESPACE = "crawl"

MakeReceiver = Callable[..., Awaitable[TestClient[Any, Any]]]


def event(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return result


@pytest.fixture
def make_receiver(emulator: tuple[Emulator, str], aiohttp_client: Any) -> MakeReceiver:
    async def make(**overrides: Any) -> TestClient[Any, Any]:
        settings = ReceiverSettings(kube_server=emulator[1], namespace=NAMESPACE, **overrides)
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        return client

    return make


async def crawljobs(kube_client: kube.KubeClient) -> list[dict[str, Any]]:
    return await kube_client.list(kube.CRAWLJOBS, NAMESPACE)


async def test_s3_event_creates_crawljob_with_decoded_key(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    response = await client.post("/v1/trigger", json=event("s3-put.json"))
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["format"] == "s3"
    [item] = answer["crawljobs"]
    assert item["status"] == "created"
    assert item["key"] == "sensors/2026/11/28/Plant A readings+été 100%.csv"
    [stored] = await crawljobs(kube_client)
    assert stored["metadata"]["name"] == item["name"]
    source = stored["spec"]["source"]
    assert source == {
        "bucket": "iot-landing",
        "key": "sensors/2026/11/28/Plant A readings+été 100%.csv",
        "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
        "size": 52428800,
        "sequencer": "0055AED6DCD90281E5",
        "eventTime": "2026-11-28T09:14:07.482Z",
    }
    assert stored["metadata"]["annotations"]["crawljob.io/raw-key"] == (
        "sensors/2026/11/28/Plant+A+readings%2B%C3%A9t%C3%A9+100%25.csv"
    )


async def test_redelivered_event_creates_no_second_crawljob(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    first = await (await client.post("/v1/trigger", json=event("s3-put.json"))).json()
    response = await client.post("/v1/trigger", json=event("s3-put.json"))
    assert response.status == 202
    second = await response.json()
    assert second["crawljobs"][0]["status"] == "duplicate"
    assert second["crawljobs"][0]["name"] == first["crawljobs"][0]["name"]
    assert len(await crawljobs(kube_client)) == 1


async def test_minimal_shape_uses_default_bucket(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(default_bucket="landing")
    response = await client.post("/v1/trigger", json={"object": {"key": "a b+c.csv"}})
    assert response.status == 202, await response.text()
    [stored] = await crawljobs(kube_client)
    assert stored["spec"]["source"] == {"bucket": "landing", "key": "a b+c.csv"}


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        ({"bucket": "b"}, "S3 object key missing in POST request", "key"),
        ({"bucket": "b", "object": {}}, "S3 object key missing in POST request", "object.key"),
        ({"bucket": "b", "object": {"key": "  "}}, "S3 object key in POST request is blank", "object.key"),
        ({"bucket": "b", "object": {"key": ""}}, "S3 object key in POST request is blank", "object.key"),
        (
            {"object": {"key": "k"}},
            "bucket missing in POST request (and no default bucket is configured)",
            "bucket",
        ),
    ],
)
async def test_bad_minimal_body_answers_400_naming_the_field(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient, body: Any, message: str, field: str
) -> None:
    client = await make_receiver()
    response = await client.post("/v1/trigger", json=body)
    assert response.status == 400
    assert await response.json() == {"error": message, "field": field}
    assert await crawljobs(kube_client) == []


async def test_healthz(make_receiver: MakeReceiver) -> None:
    client = await make_receiver()
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"
