"""Property-based fuzzing of POST /v1/trigger against the running receiver and API emulator.

Bodies come from hypothesis: arbitrary JSON, arbitrary bytes, and near-valid documents of each
format described in openapi.json with every field drawn from arbitrary values. Properties: the
receiver never answers 5xx (the API is healthy here), only statuses the OpenAPI document lists,
and a request that is not accepted (202) creates no CrawlJob; an accepted one creates CrawlJobs only
for objects that pass an independent check of S3's rules (bucket name, key bytes, no NUL, size).
Bodies include huge numbers (beyond int64, and 5,000-digit ones), control characters, invalid
buckets and keys S3 cannot hold (issue 13).
Default: 3,000 examples (~45 s); CRAWLJOB_FUZZ_EXAMPLES=20000 for a long run.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
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
EXAMPLES = int(os.environ.get("CRAWLJOB_FUZZ_EXAMPLES", "3000"))
# An independent statement of S3's bucket rules (not the receiver's code), for the oracle.
BUCKET_RULE = re.compile(
    r"(?!xn--)(?!sthree-)(?!.*\.\.)(?![0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?<!-s3alias)(?<!--ol-s3)"
)
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
        self.count: int | None = None

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

huge_numbers = (
    st.integers(min_value=2**53 - 2, max_value=2**70)
    | st.integers(max_value=-1)
    | st.sampled_from([10**300, -(10**300), 1e308, -1e308, 2**63, 2**64])
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_numbers
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=10)
)
anything = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
keys = (
    st.text(max_size=40)
    | st.sampled_from(
        ["a.csv", "dir/x y.csv", "+", "%", "%ZZ", "%FF", "a%2Fb", " ", "", "a\x00b", "%00", "a#b?c", "\t\n"]
    )
    | st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=1, max_size=8)
    | st.just("k" * 1025)
    | st.just("€" * 342)
)
buckets = (
    st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True)
    | st.sampled_from(
        [
            "a/b",
            "b?x",
            "..",
            "x" * 300,
            "Upper",
            "192.168.0.1",
            "xn--abc",
            "ab",
            "a..b",
            "crawljob-inbox/out",
            "b\x00b",
        ]
    )
    | st.text(max_size=70)
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | anything


s3_object = st.fixed_dictionaries(
    {"key": maybe(keys)},
    optional={
        "size": maybe(st.integers(min_value=-5) | huge_numbers),
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
                {"bucket": maybe(st.fixed_dictionaries({"name": maybe(buckets)})), "object": maybe(s3_object)}
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
    {
        "bucket": buckets,
        "object": st.fixed_dictionaries({"key": keys}, optional={"size": st.integers() | huge_numbers}),
    }
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
        buckets,
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
    [
        b"",
        b"{",
        b"\xef\xbb\xbf{}",
        b"[" * 5000,
        b'{"a":' * 3000,
        b'{"bucket": "landing", "object": {"key": "a.csv", "size": ' + b"9" * 5000 + b"}}",
        b'{"bucket": "landing", "object": {"key": "a.csv", "size": "' + b"9" * 5000 + b'"}}',
        b'{"bucket": "landing", "object": {"key": "a.csv", "size": 1e999}}',
        b'{"bucket": "landing", "key": "a\\u0000b"}',
    ]
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
    # Only this test creates CrawlJobs here, one request at a time: the last count still holds.
    before = running.count if running.count is not None else running.crawljob_count()
    status, answer = running.post(body, headers)
    event(f"status {status}")
    assert status < 500, (status, answer, body)
    assert status in DOCUMENTED, (status, answer)
    document = json.loads(answer)
    after = running.count = running.crawljob_count()
    if status == 202:
        created = [item for item in document["crawljobs"] if item["status"] == "created"]
        assert after - before == len(created)
        for item in document["crawljobs"]:
            assert BUCKET_RULE.fullmatch(item["bucket"]), item
            assert "\x00" not in item["key"] and 0 < len(item["key"].encode("utf-8")) <= 1024, item
    else:
        assert "error" in document
        assert after == before, (status, document)
