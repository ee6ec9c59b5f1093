"""Issue 13's attacks on POST /v1/trigger, replayed against the receiver over real HTTP.

The receiver talks to the Kubernetes API emulator; SNS is a local HTTPS server with its own test
CA (`fakes.sns`). Each test names the finding it replays; each failed before the fix.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from crawljob import events, kube
from crawljob.local.emulator import Emulator
from crawljob.receiver.app import create_app
from crawljob.resource import ObjectRef, crawljob_manifest, crawljob_name
from fakes.sns import FakeSns, serve_fake_sns, sns_receiver_settings, sns_timestamp

EVENTS = Path(__file__).parent.parent / "data" / "events"
NAMESPACE = "attacks"
TOPIC = "arn:aws:sns:us-west-2:123456789012:crawljob-uploads"
ATTACKER_TOPIC = "arn:aws:sns:us-east-1:666666666666:attacker"
TOKEN = "the-webhook-token"

MakeReceiver = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def fake_sns(tmp_path: Path) -> AsyncIterator[FakeSns]:
    async with serve_fake_sns(tmp_path) as served:
        yield served


@pytest.fixture
def make_receiver(emulator: tuple[Emulator, str], aiohttp_client: Any, fake_sns: FakeSns) -> MakeReceiver:
    async def make(**overrides: Any) -> TestClient[Any, Any]:
        settings = sns_receiver_settings(fake_sns, emulator[1], NAMESPACE, TOPIC, TOKEN, **overrides)
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        return client

    return make


def basic(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"sns:{token}".encode()).decode()}


def notification(topic: str = TOPIC) -> dict[str, str]:
    message: dict[str, str] = json.loads((EVENTS / "sns-notification.json").read_text())
    return message | {"TopicArn": topic}


async def post_sns(
    client: TestClient[Any, Any], message: dict[str, str], headers: dict[str, str] | None = None
) -> Any:
    sent = {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-topic-arn": message["TopicArn"],
    }
    return await client.post("/v1/trigger", data=json.dumps(message).encode(), headers=sent | (headers or {}))


async def crawljobs(kube_client: kube.KubeClient) -> list[dict[str, Any]]:
    return await kube_client.list(kube.CRAWLJOBS, NAMESPACE)


# ---- finding 1: SNS from any topic bypassed the token; no Timestamp check ----


async def test_sns_from_an_attackers_topic_is_refused_when_no_topic_is_listed(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(sns_topic_arns=(), auth_mode="none")
    response = await post_sns(client, fake_sns.sign(notification(ATTACKER_TOPIC), "2"))
    assert response.status == 403
    assert "receiver.sns.topicArns" in (await response.json())["error"]
    assert fake_sns.cert_fetches == 0
    assert await crawljobs(kube_client) == []


async def test_signed_sns_without_the_token_is_challenged_for_basic_auth(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    message = fake_sns.sign(notification(), "2")
    challenged = await post_sns(client, message)
    assert challenged.status == 401
    assert challenged.headers["WWW-Authenticate"] == 'Basic realm="crawljob"'
    assert (await post_sns(client, message, basic("wrong"))).status == 403
    assert await crawljobs(kube_client) == []
    accepted = await post_sns(client, message, basic())
    assert accepted.status == 202, await accepted.text()
    assert len(await crawljobs(kube_client)) == 1


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        ("2001-09-09T01:46:40.000Z", "old"),
        (
            sns_timestamp(datetime.datetime.now(tz=datetime.UTC) - datetime.timedelta(hours=1, minutes=6)),
            "old",
        ),
        (sns_timestamp(datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(hours=1)), "future"),
        ("2026-11-28T09:14:07", "time zone"),
        ("yesterday", "ISO 8601"),
    ],
)
async def test_replayed_or_undated_sns_message_is_refused(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient, timestamp: str, reason: str
) -> None:
    client = await make_receiver()
    response = await post_sns(client, fake_sns.sign(notification(), "1", timestamp=timestamp), basic())
    assert response.status == 403
    assert reason in (await response.json())["error"]
    assert await crawljobs(kube_client) == []


async def test_sns_message_within_the_retry_window_is_accepted(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    stamp = sns_timestamp(datetime.datetime.now(tz=datetime.UTC) - datetime.timedelta(minutes=59))
    response = await post_sns(client, fake_sns.sign(notification(), "2", timestamp=stamp), basic())
    assert response.status == 202, await response.text()


# ---- finding 7: host pattern, certificate subject, failure cache, one lock per URL ----


async def test_certificate_for_another_subject_is_refused(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    message = fake_sns.sign(notification(), "2", cert_path="/other-subject.pem")
    response = await post_sns(client, message, basic())
    assert response.status == 403
    assert "evil.example" in (await response.json())["error"]
    assert await crawljobs(kube_client) == []


async def test_failed_certificate_fetch_is_cached(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    for index in range(3):
        message = notification() | {"MessageId": f"forged-{index}"}
        response = await post_sns(
            client, fake_sns.sign(message, "2", cert_path="/other-subject.pem"), basic()
        )
        assert response.status == 403
    assert fake_sns.cert_fetches == 1


async def test_slow_certificate_url_does_not_hold_up_another_message(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    slow = asyncio.ensure_future(
        post_sns(client, fake_sns.sign(notification(), "2", cert_path="/slow.pem"), basic())
    )
    await asyncio.sleep(0.2)  # the slow fetch is under way
    # The slow URL answers only after this legitimate message is through: with one lock for
    # every URL, this waits forever (here: the timeout).
    legitimate = await asyncio.wait_for(post_sns(client, fake_sns.sign(notification(), "2"), basic()), 10)
    assert legitimate.status == 202
    fake_sns.release_slow.set()
    assert (await slow).status == 202


async def test_sns_unavailable_answer_hides_the_internal_error(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    message = fake_sns.sign(notification(), "1")
    message["SigningCertURL"] = "https://localhost:1/cert.pem"
    response = await post_sns(client, message, basic())
    assert response.status == 503
    assert await response.json() == {"error": "SNS could not be reached to check this message; retry later"}


# ---- finding 4: 40-bit names collided; a collision was answered "duplicate" ----


async def test_known_colliding_pair_gets_two_crawljobs(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(auth_mode="none")
    for key in ("in/181528/data.csv", "in/1196665/data.csv"):
        response = await client.post("/v1/trigger", json={"bucket": "crawljob-inbox", "key": key})
        assert response.status == 202
        assert (await response.json())["crawljobs"][0]["status"] == "created"
    assert len(await crawljobs(kube_client)) == 2


async def test_name_held_by_another_object_is_a_collision_not_a_duplicate(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(auth_mode="none")
    ref = ObjectRef(bucket="crawljob-inbox", key="in/report.csv")
    squatter = crawljob_manifest(ObjectRef(bucket="crawljob-inbox", key="elsewhere.csv"), NAMESPACE)
    squatter["metadata"]["name"] = crawljob_name(ref)  # type: ignore[index]
    await kube_client.create(kube.CRAWLJOBS, NAMESPACE, squatter)
    body = {"bucket": ref.bucket, "key": ref.key}
    first = await (await client.post("/v1/trigger", json=body)).json()
    assert first["crawljobs"][0]["status"] == "created"
    assert first["crawljobs"][0]["name"] == crawljob_name(ref, 1)
    again = await (await client.post("/v1/trigger", json=body)).json()
    assert again["crawljobs"][0] | {} == first["crawljobs"][0] | {"status": "duplicate"}
    metrics = await (await client.get("/metrics")).text()
    assert "crawljob_receiver_name_collisions_total 2.0" in metrics
    stored = {
        item["metadata"]["name"]: item["spec"]["source"]["key"] for item in await crawljobs(kube_client)
    }
    assert stored == {crawljob_name(ref): "elsewhere.csv", crawljob_name(ref, 1): "in/report.csv"}


# ---- finding 5: no cap on records per request ----


async def test_bulk_body_is_a_413_naming_the_limit_and_creates_nothing(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(auth_mode="none")  # the default 1 MiB body holds 10,000 short records
    records = [
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "bulk"}, "object": {"key": f"{index}"}}}
        for index in range(10_000)
    ]
    response = await client.post("/v1/trigger", json={"Records": records})
    assert response.status == 413
    answer = await response.json()
    assert "limit of 100" in answer["error"] and "CRAWLJOB_MAX_RECORDS" in answer["error"]
    assert await crawljobs(kube_client) == []


async def test_records_at_the_limit_are_all_created(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(auth_mode="none", max_records=40, create_concurrency=4)
    record = json.loads((EVENTS / "s3-put.json").read_text())["Records"][0]
    records = [
        record | {"s3": record["s3"] | {"object": {"key": f"bulk/{index}.csv"}}} for index in range(40)
    ]
    response = await client.post("/v1/trigger", json={"Records": records})
    assert response.status == 202
    assert len(await crawljobs(kube_client)) == 40


# ---- finding 6: unbounded numbers, unchecked buckets, NUL keys ----


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"bucket": "landing", "object": {"key": "a.csv", "size": "9" * 5000}}, "object.size"),
        ({"bucket": "landing", "object": {"key": "a.csv", "size": 10**30}}, "object.size"),
        ({"bucket": "landing", "object": {"key": "a.csv", "size": 1e300}}, "object.size"),
        ({"bucket": "a/b", "key": "a.csv"}, "bucket"),
        ({"bucket": "b?x", "key": "a.csv"}, "bucket"),
        ({"bucket": "..", "key": "a.csv"}, "bucket"),
        ({"bucket": "x" * 300, "key": "a.csv"}, "bucket"),
        ({"bucket": "crawljob-inbox/crawljob-output", "key": "x.csv"}, "bucket"),
        ({"bucket": "192.168.1.1", "key": "a.csv"}, "bucket"),
        ({"bucket": "landing", "key": "nul\u0000.csv"}, "key"),
        ({"bucket": "landing", "key": "€" * 342}, "key"),
        ({"bucket": "landing", "object": {"key": "a.csv", "versionId": "v" * 5000}}, "object.versionId"),
    ],
)
async def test_out_of_bounds_field_is_a_400_naming_it(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient, body: dict[str, Any], field: str
) -> None:
    client = await make_receiver(auth_mode="none")
    response = await client.post("/v1/trigger", json=body)
    assert response.status == 400, await response.text()
    assert (await response.json())["field"] == field
    assert await crawljobs(kube_client) == []


async def test_encoded_nul_in_an_s3_record_key_is_a_400(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(auth_mode="none")
    document = json.loads((EVENTS / "s3-put.json").read_text())
    document["Records"][0]["s3"]["object"]["key"] = "in/evil%00.csv"
    response = await client.post("/v1/trigger", json=document)
    assert response.status == 400
    assert "NUL" in (await response.json())["error"]
    assert await crawljobs(kube_client) == []


def test_bucket_rules_accept_real_names() -> None:
    for name in ("crawljob-inbox", "my.bucket.name", "abc", "a" * 63, "bucket--usw2-az1--x-s3"):
        assert events.bucket_name_problem(name) is None, name
