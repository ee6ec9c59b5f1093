"""SNS deliveries end to end: signatures checked against a certificate served over local HTTPS.

The test makes its own CA (trustme), serves the signing certificate and a SubscribeURL from an
HTTPS server on localhost, and points the receiver at it with the host pattern and CA settings.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from crawljob import kube
from crawljob.local.emulator import Emulator
from crawljob.receiver.app import create_app
from crawljob.receiver.settings import ReceiverSettings
from fakes.sns import FakeSns, serve_fake_sns, sns_receiver_settings

EVENTS = Path(__file__).parent.parent / "data" / "events"
NAMESPACE = "crawl"
TOPIC = "arn:aws:sns:us-west-2:123456789012:crawljob-uploads"
TOKEN = "sns-subscription-token"
SNS_HEADERS = {
    "Content-Type": "text/plain; charset=UTF-8",
    "x-amz-sns-topic-arn": TOPIC,
    # SNS sends the user:password of its subscription URL (https://sns:<token>@host/v1/trigger).
    "Authorization": "Basic " + base64.b64encode(f"sns:{TOKEN}".encode()).decode(),
}


@pytest.fixture
async def fake_sns(tmp_path: Path) -> AsyncIterator[FakeSns]:
    async with serve_fake_sns(tmp_path) as served:
        yield served


MakeReceiver = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_receiver(emulator: tuple[Emulator, str], aiohttp_client: Any, fake_sns: FakeSns) -> MakeReceiver:
    async def make(**overrides: Any) -> TestClient[Any, Any]:
        settings = sns_receiver_settings(fake_sns, emulator[1], NAMESPACE, TOPIC, TOKEN, **overrides)
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        return client

    return make


def envelope(name: str) -> dict[str, str]:
    result: dict[str, str] = json.loads((EVENTS / name).read_text())
    return result


async def post(client: TestClient[Any, Any], message: dict[str, str]) -> Any:
    headers = SNS_HEADERS | {
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"],
    }
    return await client.post("/v1/trigger", data=json.dumps(message).encode(), headers=headers)


async def crawljobs(kube_client: kube.KubeClient) -> list[dict[str, Any]]:
    return await kube_client.list(kube.CRAWLJOBS, NAMESPACE)


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_notification_creates_crawljob(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient, version: str
) -> None:
    client = await make_receiver()
    response = await post(client, fake_sns.sign(envelope("sns-notification.json"), version))
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["format"] == "sns"
    assert answer["crawljobs"][0]["status"] == "created"
    [stored] = await crawljobs(kube_client)
    assert stored["spec"]["source"]["key"] == "via-sns/daily report €.csv"


async def test_certificate_is_fetched_once_and_cached(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    message = envelope("sns-notification.json")
    for index in range(3):
        message["MessageId"] = f"message-{index}"
        assert (await post(client, fake_sns.sign(message, "2"))).status == 202
    assert fake_sns.cert_fetches == 1
    assert len(await crawljobs(kube_client)) == 1  # three deliveries of one object version


async def test_tampered_notification_is_refused(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    message = fake_sns.sign(envelope("sns-notification.json"), "2")
    message["Message"] = message["Message"].replace("via-sns", "elsewhere")
    response = await post(client, message)
    assert response.status == 403
    assert (await response.json())["error"] == "SNS signature does not verify"
    assert await crawljobs(kube_client) == []


async def test_certificate_from_a_host_off_the_pattern_is_never_fetched(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    message = fake_sns.sign(envelope("sns-notification.json"), "1")
    message["SigningCertURL"] = message["SigningCertURL"].replace("localhost", "127.0.0.1")
    response = await post(client, message)
    assert response.status == 403
    assert "does not match the SNS host pattern" in (await response.json())["error"]
    assert fake_sns.cert_fetches == 0
    assert await crawljobs(kube_client) == []


async def test_notification_from_another_topic_is_refused(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    message = envelope("sns-notification.json") | {"TopicArn": "arn:aws:sns:us-west-2:999999999999:other"}
    response = await post(client, fake_sns.sign(message, "2"))
    assert response.status == 403
    assert await crawljobs(kube_client) == []


async def test_subscription_to_an_allowed_topic_is_confirmed(
    make_receiver: MakeReceiver, fake_sns: FakeSns
) -> None:
    client = await make_receiver()
    message = fake_sns.sign(envelope("sns-subscription-confirmation.json"), "1")
    response = await post(client, message)
    assert response.status == 200, await response.text()
    assert (await response.json())["subscription"] == "confirmed"
    assert fake_sns.confirmations == [envelope("sns-subscription-confirmation.json")["Token"]]


async def test_subscription_without_allowed_topics_is_not_confirmed(
    make_receiver: MakeReceiver, fake_sns: FakeSns
) -> None:
    client = await make_receiver(sns_topic_arns=())
    response = await post(client, fake_sns.sign(envelope("sns-subscription-confirmation.json"), "2"))
    assert response.status == 403
    assert "receiver.sns.topicArns" in (await response.json())["error"]
    assert fake_sns.confirmations == []


async def test_forged_subscription_is_not_confirmed(make_receiver: MakeReceiver, fake_sns: FakeSns) -> None:
    client = await make_receiver()
    message = fake_sns.sign(envelope("sns-subscription-confirmation.json"), "1")
    message["Token"] = "attacker"
    assert (await post(client, message)).status == 403
    assert fake_sns.confirmations == []


async def test_unsubscribe_confirmation_is_acknowledged(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    response = await post(client, fake_sns.sign(envelope("sns-unsubscribe-confirmation.json"), "1"))
    assert response.status == 202
    assert "UnsubscribeConfirmation" in (await response.json())["ignored"][0]["reason"]
    assert fake_sns.confirmations == []
    assert await crawljobs(kube_client) == []


async def test_sns_test_event_creates_nothing(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    message = envelope("sns-notification.json") | {"Message": (EVENTS / "s3-test-event.json").read_text()}
    response = await post(client, fake_sns.sign(message, "1"))
    assert response.status == 202
    assert (await response.json())["ignored"][0]["reason"].startswith("s3:TestEvent")
    assert await crawljobs(kube_client) == []


async def test_unreachable_certificate_host_answers_503(
    emulator: tuple[Emulator, str], aiohttp_client: Any, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    settings = ReceiverSettings(
        kube_server=emulator[1],
        namespace=NAMESPACE,
        sns_cert_host_pattern=r"^localhost$",
        sns_cert_subject_pattern=r"^localhost$",
        sns_ca_file=fake_sns.ca_file,
        sns_topic_arns=(TOPIC,),
    )
    client = await aiohttp_client(create_app(settings))
    message = fake_sns.sign(envelope("sns-notification.json"), "1")
    message["SigningCertURL"] = "https://localhost:1/cert.pem"
    response = await post(client, message)
    assert response.status == 503
    assert "Retry-After" in response.headers
    assert await crawljobs(kube_client) == []


async def test_envelope_without_headers_still_needs_its_signature(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(auth_mode="none")
    message = envelope("sns-notification.json")  # placeholder signature, not a real one
    response = await client.post(
        "/v1/trigger", json=message | {"SigningCertURL": f"{fake_sns.base}/cert.pem"}
    )
    assert response.status == 403
    assert await crawljobs(kube_client) == []


async def test_certificate_url_without_a_certificate_is_refused(
    make_receiver: MakeReceiver, fake_sns: FakeSns, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    message = fake_sns.sign(envelope("sns-notification.json"), "1")
    message["SigningCertURL"] = f"{fake_sns.base}/no-such-cert.pem"
    response = await post(client, message)
    assert response.status == 403
    assert "404" in (await response.json())["error"]
    assert await crawljobs(kube_client) == []
