"""The receiver over real HTTP against the Kubernetes API emulator: formats, answers, duplicates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from receiver_faults import NO_FAULT, Fault, serve_faulty_emulator

from crawljob import kube, resource
from crawljob.local.emulator import Emulator
from crawljob.local.s3 import free_port
from crawljob.receiver.app import create_app
from crawljob.receiver.readiness import PROBE_REF
from crawljob.receiver.settings import ReceiverSettings
from fakes.receiver import RECEIVER_NAMESPACE, MakeReceiver
from fakes.waiting import wait_for

EVENTS = Path(__file__).parent.parent / "data" / "events"
NAMESPACE = RECEIVER_NAMESPACE


def event(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return result


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
        ({"bucket": "bkt"}, "S3 object key missing in POST request", "key"),
        ({"bucket": "bkt", "object": {}}, "S3 object key missing in POST request", "object.key"),
        ({"bucket": "bkt", "object": {"key": "  "}}, "S3 object key in POST request is blank", "object.key"),
        ({"bucket": "bkt", "object": {"key": ""}}, "S3 object key in POST request is blank", "object.key"),
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


# ---- every format over HTTP ----


@pytest.mark.parametrize(
    ("name", "content_type", "format", "keys"),
    [
        ("s3-put.json", "application/json", "s3", ["sensors/2026/11/28/Plant A readings+été 100%.csv"]),
        ("s3-multi.json", "application/json", "s3", ["batch/one.csv", "batch/two.csv"]),
        ("minio-put.json", "application/json", "minio", ["sensors/line 1/temp+hum 50%.csv"]),
        ("eventbridge-created.json", "application/json", "eventbridge", ["sensors/2026/Plant B+C 100%.csv"]),
        ("minimal.json", "text/plain", "minimal", ["manual/upload 2026+11.csv"]),
    ],
)
async def test_each_format_creates_its_crawljobs(
    make_receiver: MakeReceiver,
    kube_client: kube.KubeClient,
    name: str,
    content_type: str,
    format: str,
    keys: list[str],
) -> None:
    client = await make_receiver()
    body = (EVENTS / name).read_bytes()
    response = await client.post("/v1/trigger", data=body, headers={"Content-Type": content_type})
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["format"] == format
    assert [item["key"] for item in answer["crawljobs"]] == keys
    assert {item["status"] for item in answer["crawljobs"]} == {"created"}
    stored = await crawljobs(kube_client)
    assert sorted(item["spec"]["source"]["key"] for item in stored) == sorted(keys)
    assert {item["metadata"]["name"] for item in stored} == {item["name"] for item in answer["crawljobs"]}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("s3-test-event.json", "s3:TestEvent"),
        ("s3-delete.json", "event ObjectRemoved:Delete is not an object creation"),
        ("eventbridge-deleted.json", "event 'Object Deleted' is not an object creation"),
        ("s3-folder.json", "folder placeholder"),
    ],
)
async def test_events_without_work_answer_202_ignored_with_reason(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient, name: str, reason: str
) -> None:
    client = await make_receiver()
    response = await client.post("/v1/trigger", data=(EVENTS / name).read_bytes())
    assert response.status == 202
    answer = await response.json()
    assert answer["crawljobs"] == []
    assert answer["ignored"][0]["reason"].startswith(reason)
    assert await crawljobs(kube_client) == []


async def test_sns_raw_delivery_is_parsed_as_records_and_needs_the_token(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    topic = "arn:aws:sns:us-west-2:123456789012:crawljob-uploads"
    client = await make_receiver(auth_mode="token", auth_token="t0k", sns_topic_arns=(topic,))
    headers = {
        "x-amz-sns-message-type": "Notification",
        "x-amz-sns-rawdelivery": "true",
        "x-amz-sns-topic-arn": topic,
        "Content-Type": "text/plain; charset=UTF-8",
    }
    body = (EVENTS / "s3-put.json").read_bytes()
    refused = await client.post("/v1/trigger", data=body, headers=headers)
    assert refused.status == 401
    assert await crawljobs(kube_client) == []
    accepted = await client.post("/v1/trigger", data=body, headers=headers | {"Authorization": "Bearer t0k"})
    assert accepted.status == 202
    assert (await accepted.json())["format"] == "sns-raw"
    assert len(await crawljobs(kube_client)) == 1


# ---- authentication ----


@pytest.mark.parametrize(
    ("settings", "headers", "status"),
    [
        ({"auth_mode": "token", "auth_token": "t0k"}, {"Authorization": "Bearer t0k"}, 202),
        ({"auth_mode": "token", "auth_token": "t0k"}, {}, 401),
        ({"auth_mode": "token", "auth_token": "t0k"}, {"Authorization": "Bearer nope"}, 403),
        ({"auth_mode": "hmac", "hmac_key": "k3y"}, "sign", 202),
        ({"auth_mode": "hmac", "hmac_key": "k3y"}, {}, 401),
        ({"auth_mode": "hmac", "hmac_key": "k3y"}, {"X-Crawljob-Signature": "sha256=" + "0" * 64}, 403),
        ({"auth_mode": "none"}, {}, 202),
    ],
)
async def test_auth_modes(
    make_receiver: MakeReceiver,
    kube_client: kube.KubeClient,
    settings: dict[str, str],
    headers: dict[str, str] | str,
    status: int,
) -> None:
    from crawljob.receiver import auth

    client = await make_receiver(**settings)
    body = (EVENTS / "minimal.json").read_bytes()
    if headers == "sign":
        headers = {"X-Crawljob-Signature": auth.sign("k3y", body)}
    assert isinstance(headers, dict)
    response = await client.post("/v1/trigger", data=body, headers=headers)
    assert response.status == status, await response.text()
    assert len(await crawljobs(kube_client)) == (1 if status == 202 else 0)
    if status == 401:
        assert "error" in await response.json()


async def test_sns_type_header_without_a_signed_envelope_is_refused(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    # The SNS header skips no check: without the token it is a 401 with SNS's Basic challenge,
    # with it a body that is not a signed envelope is still refused.
    client = await make_receiver(auth_mode="token", auth_token="t0k")
    body = (EVENTS / "s3-put.json").read_bytes()
    headers = {"x-amz-sns-message-type": "Notification"}
    unauthenticated = await client.post("/v1/trigger", data=body, headers=headers)
    assert unauthenticated.status == 401
    assert unauthenticated.headers["WWW-Authenticate"] == 'Basic realm="crawljob"'
    response = await client.post("/v1/trigger", data=body, headers=headers | {"Authorization": "Bearer t0k"})
    assert response.status == 403
    assert await crawljobs(kube_client) == []


# ---- filters and the loop guard ----


@pytest.mark.parametrize(
    ("settings", "body", "reason"),
    [
        (
            {"allowed_buckets": ("a", "c")},
            {"bucket": "bkt", "key": "x.csv"},
            "bucket bkt is not in the allowed buckets",
        ),
        (
            {"key_prefixes": ("in/",)},
            {"bucket": "bkt", "key": "x.csv"},
            "key does not start with an allowed prefix",
        ),
        (
            {"key_suffixes": (".csv", ".csv.gz")},
            {"bucket": "bkt", "key": "x.json"},
            "key does not end with an allowed",
        ),
        (
            {},
            {"bucket": "bkt", "key": "crawljob-output/x/part-0.parquet"},
            "key is under the crawl output location",
        ),
        (
            {"default_output_uri": "s3://bkt/results/"},
            {"bucket": "bkt", "key": "results/x.csv"},
            "key is under the crawl output location s3://bkt/results/",
        ),
    ],
)
async def test_filtered_events_answer_202_ignored(
    make_receiver: MakeReceiver,
    kube_client: kube.KubeClient,
    settings: dict[str, Any],
    body: Any,
    reason: str,
) -> None:
    client = await make_receiver(**settings)
    response = await client.post("/v1/trigger", json=body)
    assert response.status == 202
    answer = await response.json()
    assert answer["crawljobs"] == []
    assert answer["ignored"][0]["reason"].startswith(reason)
    assert await crawljobs(kube_client) == []


async def test_filters_let_matching_objects_through(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(
        allowed_buckets=("bkt",), key_prefixes=("in/",), key_suffixes=(".csv", ".csv.gz")
    )
    response = await client.post("/v1/trigger", json={"bucket": "bkt", "key": "in/x.csv.gz"})
    assert response.status == 202
    assert len(await crawljobs(kube_client)) == 1


# ---- error codes ----


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "request body is empty"),
        (b"{not json", "request body is not valid JSON"),
        (b"\xff\xfe\x00", "request body is not UTF-8 text"),
        (b"[1, 2]", "expected a JSON object, got a list"),
        (b'"text"', "expected a JSON object, got a string"),
    ],
)
async def test_non_json_bodies_answer_400(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient, body: bytes, error: str
) -> None:
    client = await make_receiver()
    response = await client.post("/v1/trigger", data=body)
    assert response.status == 400
    assert (await response.json())["error"].startswith(error)
    assert await crawljobs(kube_client) == []


async def test_body_over_the_limit_answers_413(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver(max_body_bytes=2048)
    body = json.dumps({"bucket": "bkt", "key": "k.csv", "padding": "x" * 4096}).encode()
    response = await client.post("/v1/trigger", data=body)
    assert response.status == 413
    assert "2048" in (await response.json())["error"]

    async def chunks() -> Any:
        for _ in range(8):
            yield b" " * 1024

    # Without a Content-Length (chunked), the limit applies while reading.
    streamed = await client.post("/v1/trigger", data=chunks())
    assert streamed.status == 413
    assert await crawljobs(kube_client) == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_wrong_method_answers_405(make_receiver: MakeReceiver, method: str) -> None:
    client = await make_receiver()
    response = await client.request(method, "/v1/trigger")
    assert response.status == 405
    assert "POST" in response.headers["Allow"]
    assert (await response.json())["error"] == f"method {method} not allowed on /v1/trigger"


async def test_unknown_path_answers_404_json(make_receiver: MakeReceiver) -> None:
    client = await make_receiver()
    response = await client.post("/trigger", json={})
    assert response.status == 404
    assert "POST /v1/trigger" in (await response.json())["error"]


def closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_unreachable_api_answers_503_with_retry_after(aiohttp_client: Any) -> None:
    settings = ReceiverSettings(kube_server=closed_port_url(), namespace=NAMESPACE, kube_timeout=1.0)
    client = await aiohttp_client(create_app(settings))
    response = await client.post("/v1/trigger", data=(EVENTS / "s3-put.json").read_bytes())
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    answer = await response.json()
    assert answer["crawljobs"][0]["status"] == "failed"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await client.get("/healthz")).status == 200


async def test_slow_api_answers_503_and_the_redelivery_is_a_duplicate(aiohttp_client: Any) -> None:
    delays = iter([1.0])

    def slow_first(body: dict[str, Any]) -> Fault:
        return Fault(delay=next(delays, 0.0))

    async with serve_faulty_emulator(slow_first) as (emulator, url):
        settings = ReceiverSettings(kube_server=url, namespace=NAMESPACE, kube_timeout=0.3)
        client = await aiohttp_client(create_app(settings))
        body = (EVENTS / "s3-put.json").read_bytes()
        first = await client.post("/v1/trigger", data=body)
        assert first.status == 503
        assert "Retry-After" in first.headers
        # The slow create is stored after the receiver gave up, as an API server that answers too late would.
        async with kube.KubeClient(kube.Connection(server=url)) as api:

            async def stored() -> bool:
                return emulator.in_flight == 0 and len(await crawljobs(api)) == 1

            await wait_for(stored, timeout=5, what="the slow create to land")
            second = await client.post("/v1/trigger", data=body)
            assert second.status == 202
            assert (await second.json())["crawljobs"][0]["status"] == "duplicate"
            assert len(await crawljobs(api)) == 1


@pytest.mark.parametrize("fault", [Fault(before=503), Fault(before=500), Fault(after=503)])
async def test_batch_with_one_failing_create_answers_503_and_retry_completes_it(
    aiohttp_client: Any, fault: Fault
) -> None:
    faults = iter([fault])

    def fail_two_once(body: dict[str, Any]) -> Fault:
        return next(faults, NO_FAULT) if body["spec"]["source"]["key"] == "batch/two.csv" else NO_FAULT

    async with serve_faulty_emulator(fail_two_once) as (_, url):
        client = await aiohttp_client(create_app(ReceiverSettings(kube_server=url, namespace=NAMESPACE)))
        body = (EVENTS / "s3-multi.json").read_bytes()
        first = await client.post("/v1/trigger", data=body)
        assert first.status == 503
        assert first.headers["Retry-After"] == "5"
        statuses = {item["key"]: item["status"] for item in (await first.json())["crawljobs"]}
        assert statuses == {"batch/one.csv": "created", "batch/two.csv": "failed"}
        retry = await client.post("/v1/trigger", data=body)
        assert retry.status == 202
        statuses = {item["key"]: item["status"] for item in (await retry.json())["crawljobs"]}
        expected = "duplicate" if fault.after else "created"
        assert statuses == {"batch/one.csv": "duplicate", "batch/two.csv": expected}
        async with kube.KubeClient(kube.Connection(server=url)) as api:
            assert len(await crawljobs(api)) == 2


async def test_api_refusing_the_object_answers_400(aiohttp_client: Any) -> None:
    async with serve_faulty_emulator(lambda body: Fault(before=422)) as (_, url):
        client = await aiohttp_client(create_app(ReceiverSettings(kube_server=url, namespace=NAMESPACE)))
        response = await client.post("/v1/trigger", json={"bucket": "bkt", "key": "k.csv"})
        assert response.status == 400
        answer = await response.json()
        assert answer["crawljobs"][0]["status"] == "refused"
        assert answer["crawljobs"][0]["error"] == "injected fault"


# ---- operability ----


async def test_readyz_is_ready_against_the_emulator_and_cached(
    emulator: tuple[Emulator, str], make_receiver: MakeReceiver
) -> None:
    emulator[0].trim_request_log = False  # the assertions read the request log
    client = await make_receiver(ready_cache_seconds=60.0)
    ready = await client.get("/readyz")
    assert ready.status == 200 and "dry-run" in (await ready.json())["message"]
    assert (await client.get("/readyz")).status == 200
    # One server-side dry-run create of a CrawlJob (it proves writes work; /version would not), and
    # one read of its name (a 404 proves etcd answered: the dry run alone does not).
    probes = [r for r in emulator[0] if r.method == "POST" and r.params.get("dryRun") == "All"]
    assert len(probes) == 1 and str(probes[0].url.path).endswith("/crawljobs")
    reads = [r for r in emulator[0] if r.method == "GET" and "/crawljobs/" in str(r.url.path)]
    assert len(reads) == 1 and str(reads[0].url.path).endswith("/" + resource.crawljob_name(PROBE_REF))
    async with kube.KubeClient(kube.Connection(server=emulator[1])) as api:
        assert await api.list(kube.CRAWLJOBS, NAMESPACE) == []  # the dry run stored nothing


async def test_readyz_is_not_ready_while_etcd_does_not_answer_though_a_dry_run_passes(
    aiohttp_client: Any,
) -> None:
    # An apiserver whose etcd read fails at once (no leader) answers a dry-run create 201 (it takes
    # the failed read of the name for "free") and a read 500.
    async with serve_faulty_emulator(lambda body: NO_FAULT) as (emulator, url):
        emulator.read_fault = 500
        settings = ReceiverSettings(kube_server=url, namespace=NAMESPACE, ready_cache_seconds=0.0)
        client = await aiohttp_client(create_app(settings))
        ready = await client.get("/readyz")
        assert ready.status == 503 and ready.headers["Retry-After"]
        assert emulator.injected == {"read-500": 1}
        emulator.read_fault = None
        assert (await client.get("/readyz")).status == 200


async def test_metrics_count_events_by_format_and_outcome(make_receiver: MakeReceiver) -> None:
    client = await make_receiver()
    body = (EVENTS / "s3-multi.json").read_bytes()
    await client.post("/v1/trigger", data=body)
    await client.post("/v1/trigger", data=body)
    await client.post("/v1/trigger", data=b"nope")
    text = await (await client.get("/metrics")).text()
    assert 'crawljob_receiver_events_total{format="s3",outcome="created"} 2.0' in text
    assert 'crawljob_receiver_events_total{format="s3",outcome="duplicate"} 2.0' in text
    assert 'crawljob_receiver_events_total{format="s3",outcome="ignored"} 2.0' in text
    assert 'crawljob_receiver_requests_total{endpoint="/v1/trigger",status="400"} 1.0' in text
    assert 'crawljob_receiver_request_duration_seconds_count{endpoint="/v1/trigger"} 3.0' in text


async def test_with_a_metrics_port_the_webhook_port_serves_no_metrics(make_receiver: MakeReceiver) -> None:
    """What reaches the webhook (an Ingress, a load balancer) must not reach the metrics."""
    port = free_port()
    client = await make_receiver(metrics_port=port)
    await client.post("/v1/trigger", data=(EVENTS / "s3-multi.json").read_bytes())
    assert (await client.get("/metrics")).status == 404
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as answer:
        assert answer.status == 200
        text = await answer.text()
    assert 'crawljob_receiver_events_total{format="s3",outcome="created"} 2.0' in text
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/v1/trigger") as other:
        assert other.status == 404  # the metrics port serves /metrics and nothing else


async def test_openapi_document_is_served_and_matches_the_repository(make_receiver: MakeReceiver) -> None:
    client = await make_receiver()
    response = await client.get("/openapi.json")
    assert response.status == 200
    served = await response.json()
    repository = Path(__file__).parent.parent.parent / "operator" / "crawljob" / "receiver" / "openapi.json"
    assert served == json.loads(repository.read_text())
    assert set(served["paths"]) == {"/v1/trigger", "/healthz", "/readyz", "/metrics", "/openapi.json"}


async def test_one_log_line_per_request_names_format_key_outcome_and_crawljob(
    make_receiver: MakeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    client = await make_receiver()
    with caplog.at_level(logging.INFO, logger="crawljob.receiver"):
        answer = await (
            await client.post("/v1/trigger", data=(EVENTS / "minio-put.json").read_bytes())
        ).json()
    [line] = [r for r in caplog.records if r.getMessage() == "request"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["format"] == "minio"
    assert fields["status"] == 202
    assert fields["outcome"] == "created"
    assert fields["objects"][0]["key"] == "sensors/line 1/temp+hum 50%.csv"
    assert fields["objects"][0]["crawljob"] == answer["crawljobs"][0]["name"]
    assert isinstance(fields["latency_ms"], float)


async def test_crawljob_receiver_command_serves_and_warns_when_auth_is_off(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient
) -> None:
    import asyncio
    import socket
    import sys

    import aiohttp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawljob.cli", "receiver", "--host", "127.0.0.1", "--port", str(port),
        "--kube-server", emulator[1], "--namespace", NAMESPACE, "--log-format", "json",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        warning = json.loads(await asyncio.wait_for(process.stderr.readline(), timeout=30))
        assert warning["level"] == "warning"
        assert "authentication is off" in warning["message"]
        async with aiohttp.ClientSession() as session:

            async def listening() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(listening, timeout=30, what="crawljob receiver to listen")
            async with session.post(
                f"http://127.0.0.1:{port}/v1/trigger", data=(EVENTS / "minimal.json").read_bytes()
            ) as response:
                assert response.status == 202
        assert len(await crawljobs(kube_client)) == 1
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0


async def test_replicas_share_nothing_and_one_event_on_two_replicas_makes_one_crawljob(
    emulator: tuple[Emulator, str], aiohttp_client: Any, kube_client: kube.KubeClient
) -> None:
    import asyncio

    settings = ReceiverSettings(kube_server=emulator[1], namespace=NAMESPACE)
    replicas = [await aiohttp_client(create_app(settings)) for _ in range(2)]
    body = (EVENTS / "s3-multi.json").read_bytes()
    responses = await asyncio.gather(*(replica.post("/v1/trigger", data=body) for replica in replicas * 3))
    assert {response.status for response in responses} == {202}
    statuses = [item["status"] for response in responses for item in (await response.json())["crawljobs"]]
    assert statuses.count("created") == 2
    assert statuses.count("duplicate") == 10
    assert len(await crawljobs(kube_client)) == 2
