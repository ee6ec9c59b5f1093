"""Property-based fuzzing of POST /v1/trigger against the running receiver and API emulator.

Bodies come from hypothesis: arbitrary JSON, arbitrary bytes, and near-valid documents of each
format described in openapi.json with every field drawn from arbitrary values. Properties: the
receiver never answers 5xx (the API is healthy here), only statuses the OpenAPI document lists,
and a request that is not accepted (202) creates no CrawlJob.
Default: 600 examples (~10 s); CRAWLJOB_FUZZ_EXAMPLES=5000 for a long run.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from receiver_faults import NO_FAULT, serve_faulty_emulator

from crawljob.receiver.app import create_app
from crawljob.receiver.settings import ReceiverSettings

NAMESPACE = "fuzz"
EXAMPLES = int(os.environ.get("CRAWLJOB_FUZZ_EXAMPLES", "600"))
OPENAPI = json.loads(
    (Path(__file__).parent.parent.parent / "operator" / "crawljob" / "receiver" / "openapi.json").read_text()
)
DOCUMENTED = {int(code) for code in OPENAPI["paths"]["/v1/trigger"]["post"]["responses"]}


class Running:
    def __init__(self) -> None:
        self.port = 0
        self.api = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.ready = threading.Event()
        self.connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.connection.request("POST", "/v1/trigger", body=body, headers=headers)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def crawljob_count(self) -> int:
        url = f"{self.api}/apis/crawljob.io/v1alpha1/namespaces/{NAMESPACE}/crawljobs"
        with urllib.request.urlopen(url, timeout=10) as response:
            return len(json.loads(response.read())["items"])


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    """The receiver on a real port, in a thread with its own loop, against a (forgetful) emulator."""
    state = Running()

    async def serve() -> None:
        async with serve_faulty_emulator(lambda body: NO_FAULT) as (_, url):
            settings = ReceiverSettings(
                kube_server=url, namespace=NAMESPACE, sns_cert_host_pattern="(?!)", max_body_bytes=65536
            )
            runner = web.AppRunner(create_app(settings), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            state.port, state.api = runner.addresses[0][1], url
            state.loop, state.stop = asyncio.get_running_loop(), asyncio.Event()
            state.ready.set()
            await state.stop.wait()
            await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert state.ready.wait(30), "the receiver did not start"
    yield state
    if state.connection is not None:
        state.connection.close()
    assert state.loop is not None and state.stop is not None
    state.loop.call_soon_threadsafe(state.stop.set)
    thread.join(10)


# ---- strategies ----

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
anything = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.text(max_size=40) | st.sampled_from(
    ["a.csv", "dir/x y.csv", "+", "%", "%ZZ", "%FF", "a%2Fb", " ", ""]
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | anything


s3_object = st.fixed_dictionaries(
    {"key": maybe(keys)},
    optional={
        "size": maybe(st.integers(min_value=-5)),
        "eTag": maybe(st.text(max_size=8)),
        "versionId": maybe(st.text(max_size=8)),
        "sequencer": maybe(st.text(max_size=8)),
    },
)
s3_record = st.fixed_dictionaries(
    {
        "eventName": maybe(
            st.sampled_from(["ObjectCreated:Put", "s3:ObjectCreated:Post", "ObjectRemoved:Delete"])
        ),
        "s3": maybe(
            st.fixed_dictionaries(
                {"bucket": maybe(st.fixed_dictionaries({"name": maybe(keys)})), "object": maybe(s3_object)}
            )
        ),
    },
    optional={"eventSource": maybe(st.sampled_from(["aws:s3", "minio:s3"])), "eventTime": anything},
)
s3_event = st.fixed_dictionaries(
    {"Records": maybe(st.lists(maybe(s3_record), max_size=3))},
    optional={"EventName": anything, "Key": anything},
)
eventbridge = st.fixed_dictionaries(
    {
        "source": st.just("aws.s3"),
        "detail-type": maybe(st.sampled_from(["Object Created", "Object Deleted"])),
        "detail": maybe(
            st.fixed_dictionaries(
                {
                    "bucket": maybe(st.fixed_dictionaries({"name": maybe(keys)})),
                    "object": maybe(
                        st.fixed_dictionaries(
                            {"key": maybe(keys)},
                            optional={"etag": anything, "size": anything, "version-id": anything},
                        )
                    ),
                }
            )
        ),
    }
)
minimal = st.fixed_dictionaries(
    {},
    optional={
        "bucket": maybe(keys),
        "object": maybe(
            st.fixed_dictionaries({}, optional={"key": maybe(keys), "size": anything, "versionId": anything})
        ),
        "key": anything,
    },
)
sns_envelope = st.fixed_dictionaries(
    {
        "Type": maybe(
            st.sampled_from(["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"])
        ),
        "TopicArn": maybe(st.text(max_size=20)),
    },
    optional={
        name: maybe(st.text(max_size=30))
        for name in [
            "MessageId",
            "Message",
            "Timestamp",
            "SignatureVersion",
            "Signature",
            "SigningCertURL",
            "SubscribeURL",
            "Token",
        ]
    },
)
test_event = st.fixed_dictionaries({"Event": st.just("s3:TestEvent")}, optional={"Bucket": anything})
# Well-formed documents with arbitrary keys and buckets: the accepting path gets fuzzed too.
valid_minimal = st.fixed_dictionaries(
    {"bucket": st.text(min_size=1, max_size=20), "object": st.fixed_dictionaries({"key": keys})}
)
valid_s3 = st.lists(
    st.builds(
        lambda bucket, key, event_name: {
            "eventName": event_name,
            "s3": {
                "bucket": {"name": bucket},
                "object": {"key": urllib.parse.quote_plus(key), "size": len(key)},
            },
        },
        st.text(min_size=1, max_size=20),
        keys,
        st.sampled_from(
            ["ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", "ObjectRemoved:Delete"]
        ),
    ),
    min_size=1,
    max_size=3,
).map(lambda records: {"Records": records})
json_bodies = (
    valid_minimal | valid_s3 | s3_event | eventbridge | minimal | sns_envelope | test_event | anything
).map(lambda document: json.dumps(document).encode())
raw_bodies = st.binary(max_size=200) | st.sampled_from(
    [b"", b"{", b"\xef\xbb\xbf{}", b"[" * 5000, b'{"a":' * 3000]
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "x-amz-sns-message-type": st.sampled_from(["Notification", "SubscriptionConfirmation"]),
        "x-amz-sns-rawdelivery": st.sampled_from(["true", "false"]),
        "Content-Type": st.sampled_from(
            ["application/json", "text/plain; charset=UTF-8", "application/x-www-form-urlencoded"]
        ),
    },
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=json_bodies | raw_bodies, headers=headers)
def test_no_body_gets_a_5xx_and_refused_bodies_create_nothing(
    running: Running, body: bytes, headers: dict[str, str]
) -> None:
    before = running.crawljob_count()
    status, answer = running.post(body, headers)
    event(f"status {status}")
    assert status < 500, (status, answer, body)
    assert status in DOCUMENTED, (status, answer)
    document = json.loads(answer)
    after = running.crawljob_count()
    if status == 202:
        created = [item for item in document["crawljobs"] if item["status"] == "created"]
        assert after - before == len(created)
    else:
        assert "error" in document
        assert after == before, (status, document)
