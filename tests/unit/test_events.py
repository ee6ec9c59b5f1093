"""Webhook bodies → object references: each format, key decoding, ignore reasons, 400 messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from crawljob import events
from crawljob.events import EventError, Filters, Parsed, SnsEnvelope

EVENTS = Path(__file__).parent.parent / "data" / "events"


def load(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def parse(document: Any, default_bucket: str | None = None) -> Parsed:
    parsed = events.parse_document(document, default_bucket)
    assert isinstance(parsed, Parsed)
    return parsed


def s3_body(raw_key: str, event_name: str = "ObjectCreated:Put", **obj: Any) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventName": event_name,
                "eventSource": "aws:s3",
                "s3": {"bucket": {"name": "bkt"}, "object": {"key": raw_key, **obj}},
            }
        ]
    }


# ---- formats, from the documented examples under tests/data/events ----


def test_s3_put_record_gives_decoded_key_and_identity() -> None:
    parsed = parse(load("s3-put.json"))
    assert parsed.format == "s3"
    [target] = parsed.targets
    assert target.ref.bucket == "iot-landing"
    assert target.ref.key == "sensors/2026/11/28/Plant A readings+été 100%.csv"
    assert target.raw_key == "sensors/2026/11/28/Plant+A+readings%2B%C3%A9t%C3%A9+100%25.csv"
    assert target.ref.version_id == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
    assert target.ref.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert target.ref.size == 52428800
    assert target.ref.sequencer == "0055AED6DCD90281E5"
    assert target.ref.event_time == "2026-11-28T09:14:07.482Z"
    assert parsed.ignored == []


def test_several_records_give_several_targets_and_removals_are_ignored_with_reason() -> None:
    parsed = parse(load("s3-multi.json"))
    assert [t.ref.key for t in parsed.targets] == ["batch/one.csv", "batch/two.csv"]
    assert parsed.targets[0].ref.etag == "4af981f98d22a0b9979da24b259e5e42-12"
    [ignored] = parsed.ignored
    assert ignored.key == "batch/old.csv"
    assert ignored.reason == "event ObjectRemoved:Delete is not an object creation"


def test_object_removed_is_ignored() -> None:
    parsed = parse(load("s3-delete.json"))
    assert parsed.targets == []
    assert "ObjectRemoved:Delete" in parsed.ignored[0].reason


def test_s3_test_event_is_acknowledged_and_creates_nothing() -> None:
    parsed = parse(load("s3-test-event.json"))
    assert parsed.targets == []
    assert parsed.ignored[0].reason.startswith("s3:TestEvent")
    assert parsed.ignored[0].bucket == "iot-landing"


def test_minio_event_decodes_slashes_pluses_and_percent() -> None:
    parsed = parse(load("minio-put.json"))
    assert parsed.format == "minio"
    [target] = parsed.targets
    assert target.ref.key == "sensors/line 1/temp+hum 50%.csv"
    assert target.raw_key == "sensors%2Fline+1%2Ftemp%2Bhum+50%25.csv"
    assert target.ref.sequencer == "187B9C6B3A31A3F4"


def test_eventbridge_object_created_takes_the_key_literally() -> None:
    parsed = parse(load("eventbridge-created.json"))
    assert parsed.format == "eventbridge"
    [target] = parsed.targets
    assert target.ref.key == "sensors/2026/Plant B+C 100%.csv"
    assert target.raw_key == target.ref.key
    assert target.ref.version_id == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"
    assert target.ref.etag == "b1946ac92492d2347c6235b4d2611184"
    assert target.ref.size == 5
    assert target.ref.event_time == "2026-11-28T13:00:00Z"


def test_eventbridge_accepts_eTag_spelling() -> None:
    body = load("eventbridge-created.json")
    obj = body["detail"]["object"]
    obj["eTag"] = obj.pop("etag")
    assert parse(body).targets[0].ref.etag == "b1946ac92492d2347c6235b4d2611184"


def test_eventbridge_object_deleted_is_ignored() -> None:
    parsed = parse(load("eventbridge-deleted.json"))
    assert parsed.targets == []
    assert "Object Deleted" in parsed.ignored[0].reason


def test_minimal_shape_key_is_literal() -> None:
    [target] = parse(load("minimal.json")).targets
    assert (target.ref.bucket, target.ref.key) == ("iot-landing", "manual/upload 2026+11.csv")


def test_minimal_shape_bucket_defaults_and_flat_key_is_accepted() -> None:
    assert parse({"object": {"key": "k.csv"}}, "dflt").targets[0].ref.bucket == "dflt"
    assert parse({"bucket": "xyz", "key": "k.csv"}, "dflt").targets[0].ref.bucket == "xyz"


def test_sns_envelope_is_recognised_and_its_message_parsed() -> None:
    envelope = events.parse_document(load("sns-notification.json"))
    assert isinstance(envelope, SnsEnvelope)
    assert envelope.type == "Notification"
    assert envelope.topic_arn == "arn:aws:sns:us-west-2:123456789012:crawljob-uploads"
    parsed = events.parse_sns_message(envelope.message)
    assert parsed.format == "sns"
    assert parsed.targets[0].ref.key == "via-sns/daily report €.csv"


def test_sns_message_holding_a_test_event_is_ignored() -> None:
    parsed = events.parse_sns_message(json.dumps(load("s3-test-event.json")))
    assert parsed.targets == [] and parsed.ignored[0].reason.startswith("s3:TestEvent")


@pytest.mark.parametrize("message", ["not json", "[1]", '{"hello": 1}'])
def test_sns_message_that_is_not_an_s3_event_is_a_400(message: str) -> None:
    with pytest.raises(EventError) as caught:
        events.parse_sns_message(message)
    assert caught.value.field == "Message"


def test_sns_envelope_missing_signature_is_a_400() -> None:
    body = load("sns-notification.json")
    del body["Signature"]
    with pytest.raises(EventError, match="Signature is missing"):
        events.parse_document(body)


# ---- key decoding ----


@pytest.mark.parametrize(
    "key",
    [
        "plain.csv",
        "with space.csv",
        "plus+sign.csv",
        "100% done.csv",
        "ünïcødé/日本語.csv",
        "a+b %2B c.csv",
        "emoji 🚀.csv",
        "trailing space .csv",
        "dir/sub dir/x.csv.gz",
    ],
)
def test_url_encoded_keys_round_trip(key: str) -> None:
    # S3 encodes keys like quote_plus (space → +); MinIO also encodes "/" as %2F.
    for raw in (quote_plus(key, safe="/"), quote_plus(key, safe=""), quote(key)):
        [target] = parse(s3_body(raw)).targets
        assert target.ref.key == key
        assert target.raw_key == raw


def test_invalid_utf8_in_encoded_key_is_a_400() -> None:
    with pytest.raises(EventError) as caught:
        parse(s3_body("bad%FF.csv"))
    assert caught.value.field == "Records[0].s3.object.key"


def test_encoded_key_that_decodes_to_blank_is_a_400() -> None:
    with pytest.raises(EventError, match="S3 object key in POST request is blank"):
        parse(s3_body("+++"))


# ---- 400s name the field ----


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        ({}, events.KEY_MISSING, "key"),
        ({"bucket": "bkt"}, events.KEY_MISSING, "key"),
        ({"bucket": "bkt", "object": {}}, events.KEY_MISSING, "object.key"),
        ({"bucket": "bkt", "object": {"key": " "}}, events.KEY_BLANK, "object.key"),
        ({"bucket": "bkt", "object": {"key": 7}}, "object.key must be a string, got a number", "object.key"),
        ({"bucket": "bkt", "object": "k"}, "object must be an object with a key, got a string", "object"),
        ({"bucket": " ", "object": {"key": "k"}}, "bucket must be a non-blank string", "bucket"),
        (
            {"bucket": "bkt", "object": {"key": "k", "size": -1}},
            f"object.size must be an integer from 0 to {events.MAX_SIZE}",
            "object.size",
        ),
        ({"Records": []}, "Records must be a non-empty list of S3 event records", "Records"),
        ({"Records": [1]}, "Records[0] must be an object, got a number", "Records[0]"),
        (
            s3_body("k")
            | {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "bkt"}}}]},
            events.KEY_MISSING,
            "Records[0].s3.object",
        ),
        (s3_body(""), events.KEY_BLANK, "Records[0].s3.object.key"),
        (
            {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "k"}}}]},
            "Records[0].s3.bucket is missing",
            "Records[0].s3.bucket",
        ),
        ({"Records": [{"s3": {}}]}, "Records[0].eventName is missing", "Records[0].eventName"),
        (
            {
                "source": "aws.s3",
                "detail-type": "Object Created",
                "detail": {"bucket": {"name": "bkt"}, "object": {}},
            },
            events.KEY_MISSING,
            "detail.object.key",
        ),
    ],
)
def test_malformed_bodies_raise_with_message_and_field(body: Any, message: str, field: str) -> None:
    with pytest.raises(EventError) as caught:
        events.parse_document(body)
    assert caught.value.message == message
    assert caught.value.field == field


@pytest.mark.parametrize("document", [[], "text", 3, None, True])
def test_non_object_json_is_a_400(document: Any) -> None:
    with pytest.raises(EventError, match="expected a JSON object"):
        events.parse_document(document)


@pytest.mark.parametrize("body", [b"", b"  ", b"{", b"\xff\xfe", b"[1,", b"nope"])
def test_load_json_refuses_non_json(body: bytes) -> None:
    with pytest.raises(EventError):
        events.load_json(body)


def test_one_bad_record_fails_the_whole_batch() -> None:
    body = load("s3-multi.json")
    body["Records"][1]["s3"]["object"]["key"] = ""
    with pytest.raises(EventError) as caught:
        parse(body)
    assert caught.value.field == "Records[1].s3.object.key"


# ---- filters and the loop guard ----


def test_folder_placeholders_are_ignored() -> None:
    parsed = events.apply_filters(parse(load("s3-folder.json")), Filters())
    assert parsed.targets == []
    assert parsed.ignored[0].reason.startswith("folder placeholder")
    assert parsed.ignored[0].key == "sensors/new folder/"


@pytest.mark.parametrize(
    ("filters", "key", "bucket", "reason"),
    [
        (Filters(buckets=("other",)), "a.csv", "bkt", "bucket bkt is not in the allowed buckets"),
        (Filters(prefixes=("in/",)), "out/a.csv", "bkt", "key does not start with an allowed prefix (in/)"),
        (
            Filters(suffixes=(".csv", ".csv.gz")),
            "a.parquet",
            "bkt",
            "key does not end with an allowed suffix (.csv, .csv.gz)",
        ),
        (
            Filters(),
            "crawljob-output/x-1/part-0.parquet",
            "bkt",
            "key is under the crawl output location crawljob-output/ (any bucket): loop guard",
        ),
        (
            Filters(output_locations=((None, "crawljob-output/"), ("bkt", "results/"))),
            "results/x.csv",
            "bkt",
            "key is under the crawl output location s3://bkt/results/: loop guard",
        ),
    ],
)
def test_filters_ignore_with_reason(filters: Filters, key: str, bucket: str, reason: str) -> None:
    parsed = Parsed("minimal", targets=parse({"bucket": bucket, "object": {"key": key}}).targets)
    filtered = events.apply_filters(parsed, filters)
    assert filtered.targets == []
    assert filtered.ignored[0].reason == reason


def test_filters_keep_what_matches() -> None:
    filters = Filters(
        buckets=("bkt",),
        prefixes=("in/",),
        suffixes=(".csv", ".csv.gz"),
        output_locations=((None, "crawljob-output/"), ("bkt", "results/")),
    )
    parsed = parse({"bucket": "bkt", "object": {"key": "in/a.csv.gz"}})
    assert events.apply_filters(parsed, filters).targets == parsed.targets
    other_bucket = parse({"bucket": "ccc", "object": {"key": "results/x.csv"}})
    assert events.apply_filters(other_bucket, Filters()).targets == other_bucket.targets


def test_output_location_parses_s3_uris() -> None:
    assert events.output_location("s3://out/pre/") == ("out", "pre/")
    assert events.output_location("s3://out") == ("out", "")
    with pytest.raises(ValueError):
        events.output_location("/local/dir")
