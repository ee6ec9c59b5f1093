"""SQS polling of CrawlSources: a real `crawljob operator` process, the emulator and moto's SQS server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from receiver_faults import NO_FAULT, Fault, serve_faulty_emulator

from crawljob import kube, resource, sources
from crawljob.local.emulator import Emulator
from crawljob.local.s3 import LocalS3
from fakes.stack import NAMESPACE, running_operator, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("s3_env")]

# Short polls and a short visibility timeout: redeliveries within a test's patience.
OPERATOR_FLAGS = {"sqs-wait-seconds": 1}
VISIBILITY_SECONDS = 2


@pytest.fixture
def sqs_client(local_s3: LocalS3, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 SQS client on moto's server; the operator (a child process) finds it the same way."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", local_s3.endpoint)
    env = local_s3.environment()
    return boto3.client(
        "sqs",
        endpoint_url=local_s3.endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def queue_url(sqs_client: Any) -> Iterator[str]:
    url: str = sqs_client.create_queue(
        QueueName=f"test-{uuid.uuid4().hex[:12]}", Attributes={"VisibilityTimeout": str(VISIBILITY_SECONDS)}
    )["QueueUrl"]
    yield url
    sqs_client.delete_queue(QueueUrl=url)


def source_body(bucket: str, queue: str) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": sources.KIND,
        "metadata": {"name": "feed", "namespace": NAMESPACE},
        "spec": {
            "bucket": bucket,
            "prefix": "in/",
            "interval": "0",  # no sweeps: every CrawlJob here comes from the queue
            "sqs": {"queueUrl": queue},
            "template": {"maxRejectRatio": 0.25},
        },
    }


def s3_record(bucket: str, key: str, etag: str) -> dict[str, Any]:
    obj = {"key": key, "size": 8, "eTag": etag, "sequencer": "0A1B2C"}
    return {
        "Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": obj}}]
    }


def sns_wrapped(document: dict[str, Any]) -> dict[str, Any]:
    """What SNS → SQS delivers without raw delivery: the SNS envelope around the S3 event."""
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:landing",
        "Message": json.dumps(document),
        "Timestamp": "2026-12-02T02:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "c2lnbmF0dXJl",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
    }


def eventbridge(bucket: str, key: str, etag: str) -> dict[str, Any]:
    return {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "time": "2026-12-02T02:00:00Z",
        "detail": {"bucket": {"name": bucket}, "object": {"key": key, "etag": etag, "size": 8}},
    }


def name_of(bucket: str, key: str, etag: str) -> str:
    return resource.crawljob_name(resource.ObjectRef(bucket, key, etag=etag))


def messages_left(sqs_client: Any, queue: str) -> int:
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


async def crawljobs(client: kube.KubeClient) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in await client.list(kube.CRAWLJOBS, NAMESPACE)}


async def sqs_status(client: kube.KubeClient) -> dict[str, Any]:
    body = await client.get(kube.CRAWLSOURCES, NAMESPACE, "feed")
    status: dict[str, Any] = (body.get("status") or {}).get("sqs") or {}
    return status


async def test_a_message_makes_its_crawljob_then_is_deleted_and_redeliveries_make_no_second(
    emulator: tuple[Emulator, str],
    kube_client: kube.KubeClient,
    sqs_client: Any,
    queue_url: str,
    bucket: str,
    tmp_path: Path,
) -> None:
    etag = "0123456789abcdef0123456789abcdef"
    name = name_of(bucket, "in/a.csv", etag)
    async with running_operator(emulator[1], tmp_path / "operator.log", **OPERATOR_FLAGS):
        await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, source_body(bucket, queue_url))
        sqs_client.send_message(
            QueueUrl=queue_url, MessageBody=json.dumps(s3_record(bucket, "in/a.csv", etag))
        )

        async def drained() -> bool:
            return messages_left(sqs_client, queue_url) == 0

        await wait_until(drained, 30, "the message to be handled and deleted")
        found = await crawljobs(kube_client)
        assert set(found) == {name}  # the webhook's name for the same object
        assert found[name]["metadata"]["labels"][sources.LABEL_SOURCE] == "feed"
        assert found[name]["spec"]["maxRejectRatio"] == 0.25  # the source's template
        # The same object again, in each format a queue carries: no second CrawlJob, all deleted.
        for document in (
            s3_record(bucket, "in/a.csv", etag),
            sns_wrapped(s3_record(bucket, "in/a.csv", etag)),
            eventbridge(bucket, "in/a.csv", etag),
        ):
            sqs_client.send_message(QueueUrl=queue_url, MessageBody=json.dumps(document))
        await wait_until(drained, 30, "the redeliveries to be deleted")

        async def counted() -> dict[str, Any] | None:
            status = await sqs_status(kube_client)
            return status if status.get("messagesDeleted") == 4 else None

        status = await wait_until(counted, 15, "the SQS status")
    assert set(await crawljobs(kube_client)) == {name}
    assert status["crawljobsCreated"] == 1 and status["messagesMalformed"] == 0
    assert status["condition"]["type"] == "QueueReady" and status["condition"]["status"] == "True"


async def test_a_malformed_message_stays_in_the_queue_with_one_warning_event(
    emulator: tuple[Emulator, str],
    kube_client: kube.KubeClient,
    sqs_client: Any,
    queue_url: str,
    bucket: str,
    tmp_path: Path,
) -> None:
    async with running_operator(emulator[1], tmp_path / "operator.log", **OPERATOR_FLAGS):
        await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, source_body(bucket, queue_url))
        sqs_client.send_message(QueueUrl=queue_url, MessageBody='{"Records": "not a list"}')

        async def warned() -> list[dict[str, Any]]:
            return [
                event
                for event in await kube_client.list(kube.EVENTS, NAMESPACE)
                if event.get("reason") == "MalformedMessage" and event["involvedObject"]["name"] == "feed"
            ]

        (event,) = await wait_until(warned, 30, "a MalformedMessage event")
        assert event["type"] == "Warning" and "Records" in event["message"]

        async def received_again() -> dict[str, Any] | None:
            status = await sqs_status(kube_client)
            return status if status.get("messagesReceived", 0) >= 2 else None

        # Redelivered after the visibility timeout: still not deleted, still one Event.
        status = await wait_until(received_again, 30, "the malformed message's redelivery")
        assert messages_left(sqs_client, queue_url) == 1
        assert len(await warned()) == 1
    assert status["messagesMalformed"] == 1 and status["messagesDeleted"] == 0
    assert await crawljobs(kube_client) == {}


async def test_the_api_failing_mid_batch_deletes_no_message_whose_crawljob_is_missing(
    sqs_client: Any, queue_url: str, bucket: str, tmp_path: Path
) -> None:
    keys = [f"in/{kind}-{index}.csv" for index, kind in enumerate(("ok", "bad", "ok", "bad", "ok"))]
    etags = {key: uuid.uuid4().hex for key in keys}

    def plan(body: dict[str, Any]) -> Fault:
        key = body["spec"]["source"]["key"]
        return Fault(before=503) if "/bad-" in key else NO_FAULT

    async with (
        serve_faulty_emulator(plan) as (faulty, url),
        kube.KubeClient(kube.Connection(server=url)) as client,
    ):
        await client.create(kube.CRAWLSOURCES, NAMESPACE, source_body(bucket, queue_url))
        sqs_client.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "MessageBody": json.dumps(s3_record(bucket, key, etags[key]))}
                for index, key in enumerate(keys)
            ],
        )
        async with running_operator(url, tmp_path / "operator.log", **OPERATOR_FLAGS):

            async def failed_twice() -> bool:
                return faulty.injected.get("failed-before-store-503", 0) >= 4  # each bad one, redelivered

            await wait_until(failed_twice, 40, "the failing creates and a redelivery")
            names = set(await crawljobs(client))
            assert names == {name_of(bucket, key, etags[key]) for key in keys if "/ok-" in key}
            # The two messages whose CrawlJobs do not exist are still in the queue; the rest are gone.
            assert messages_left(sqs_client, queue_url) == 2
            status = await sqs_status(client)
            assert status["messagesDeleted"] == 3
            assert status["condition"]["status"] == "False"
            assert status["condition"]["reason"] == "KubernetesUnavailable"
            # The API recovers: the redelivered messages make their CrawlJobs and are deleted.
            faulty.plan = lambda body: NO_FAULT

            async def drained() -> bool:
                return messages_left(sqs_client, queue_url) == 0

            await wait_until(drained, 40, "the kept messages after the API recovered")
            assert set(await crawljobs(client)) == {name_of(bucket, key, etags[key]) for key in keys}


async def test_a_queue_that_does_not_exist_shows_queue_ready_false_with_the_sqs_error(
    emulator: tuple[Emulator, str],
    kube_client: kube.KubeClient,
    sqs_client: Any,
    local_s3: LocalS3,
    bucket: str,
    tmp_path: Path,
) -> None:
    missing = f"{local_s3.endpoint}/123456789012/no-such-queue-{uuid.uuid4().hex[:8]}"
    async with running_operator(emulator[1], tmp_path / "operator.log", **OPERATOR_FLAGS):
        await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, source_body(bucket, missing))

        async def reported() -> dict[str, Any] | None:
            status = await sqs_status(kube_client)
            return status if status.get("condition") else None

        status = await wait_until(reported, 30, "the SQS status of a missing queue")
        assert status["condition"]["status"] == "False"
        assert (
            "NonExistentQueue" in status["condition"]["reason"]
            or "QueueDoesNotExist" in status["condition"]["reason"]
        )
        assert operator_alive(tmp_path / "operator.log")


def operator_alive(log_path: Path) -> bool:
    """No background loop of the operator ended (supervise.py logs that once, before /healthz fails)."""
    return "background loop" not in log_path.read_text()
