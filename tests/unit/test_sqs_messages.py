"""SQS message decisions (crawljob.operator.messages): pure, no queue."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from crawljob import resource, sources
from crawljob.operator import messages
from crawljob.operator.settings import operator_parser, operator_settings

FEED = sources.Source(
    namespace="crawls", name="feed", bucket="landing", prefix="in/", template={"maxRejectRatio": 0.1}
)
NARROW = sources.Source(namespace="crawls", name="narrow", bucket="landing", prefix="in/eu/")


def record(key: str, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    obj = {"key": key, "eTag": "abc", "size": 3}
    return {"Records": [{"eventName": event, "s3": {"bucket": {"name": "landing"}, "object": obj}}]}


def test_an_s3_record_becomes_the_webhooks_crawljob_with_the_sources_template_and_label() -> None:
    decision = messages.decide(json.dumps(record("in/a%20b.csv")), [FEED], "crawls")
    assert isinstance(decision, messages.Accepted)
    (wanted,) = decision.wanted
    manifest = wanted.manifests[0]
    assert manifest["metadata"]["name"] == resource.crawljob_name(
        resource.ObjectRef("landing", "in/a b.csv", etag="abc")
    )
    assert manifest["metadata"]["labels"][sources.LABEL_SOURCE] == "feed"
    assert manifest["spec"]["maxRejectRatio"] == 0.1
    assert [m["metadata"]["name"] for m in wanted.manifests] == [
        resource.crawljob_name(wanted.ref, attempt) for attempt in range(4)
    ]


def test_the_longest_prefix_wins_and_an_object_of_no_source_is_ignored() -> None:
    body = {"Records": record("in/eu/x.csv")["Records"] + record("other/y.csv")["Records"]}
    decision = messages.decide(json.dumps(body), [FEED, NARROW], "crawls")
    assert isinstance(decision, messages.Accepted)
    assert [wanted.source for wanted in decision.wanted] == ["narrow"]
    assert [ignored.reason for ignored in decision.ignored] == ["matches no CrawlSource"]


def test_sns_wrapped_and_eventbridge_bodies_name_the_same_crawljob() -> None:
    sns = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "MessageId": "m",
        "Timestamp": "t",
        "SignatureVersion": "1",
        "Signature": "s",
        "SigningCertURL": "https://sns.example/cert.pem",
        "Message": json.dumps(record("in/a.csv")),
    }
    bridge = {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": "landing"}, "object": {"key": "in/a.csv", "etag": "abc"}},
    }
    names = set()
    for body in (sns, bridge, record("in/a.csv")):
        decision = messages.decide(json.dumps(body), [FEED], "crawls")
        assert isinstance(decision, messages.Accepted)
        names.add(decision.wanted[0].manifests[0]["metadata"]["name"])
    assert len(names) == 1


def test_a_deletion_event_and_an_s3_test_event_ask_for_nothing_but_are_not_malformed() -> None:
    for body in (record("in/a.csv", "ObjectRemoved:Delete"), {"Event": "s3:TestEvent", "Bucket": "landing"}):
        decision = messages.decide(json.dumps(body), [FEED], "crawls")
        assert isinstance(decision, messages.Accepted) and not decision.wanted and decision.ignored


@pytest.mark.parametrize(
    "body", ["", "not json", "[1, 2]", '{"Records": []}', '{"Records": [{"eventName": "ObjectCreated:Put"}]}']
)
def test_a_body_the_webhook_would_refuse_is_malformed(body: str) -> None:
    decision = messages.decide(body, [FEED], "crawls")
    assert isinstance(decision, messages.Malformed) and decision.reason


def test_the_queue_status_keeps_its_transition_time_until_the_condition_changes() -> None:
    then = datetime.datetime(2026, 12, 2, 2, 0, tzinfo=datetime.UTC)
    later = then + datetime.timedelta(minutes=5)
    counters = messages.Counters(received=2, deleted=1, malformed=1, created=1)
    first = messages.queue_status("https://q", counters, {}, then)
    same = messages.queue_status("https://q", counters, {"sqs": first}, later)
    assert same["condition"]["lastTransitionTime"] == "2026-12-02T02:00:00Z"
    assert not messages.status_changed({"sqs": first}, same)  # only lastPollTime moved: no write
    failed = messages.queue_status("https://q", counters, {"sqs": first}, later, ("AccessDenied", "no"))
    assert (
        failed["condition"]["status"] == "False"
        and failed["condition"]["lastTransitionTime"] == "2026-12-02T02:05:00Z"
    )
    assert messages.Counters.from_status({"sqs": failed}) == counters


def test_only_a_first_receipt_posts_an_event() -> None:
    assert messages.is_first_receipt({"ApproximateReceiveCount": "1"})
    assert not messages.is_first_receipt({"ApproximateReceiveCount": "2"})


def test_a_queue_url_must_be_a_url_and_the_wait_within_sqs_limits() -> None:
    body = {"metadata": {"name": "s"}, "spec": {"bucket": "landing", "sqs": {"queueUrl": "landing-events"}}}
    with pytest.raises(sources.InvalidSource, match=r"sqs\.queueUrl"):
        sources.source_from_body(body)
    body["spec"]["sqs"] = {"queueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q"}
    assert sources.source_from_body(body).queue_url == "https://sqs.eu-west-1.amazonaws.com/1/q"
    with pytest.raises(ValueError, match="sqs-wait-seconds"):
        operator_settings(operator_parser({}).parse_args(["--sqs-wait-seconds", "21"]))
