"""Webhook bodies → object references (pure: no I/O).

One function per format, each taking the decoded JSON document and answering a `Parsed`:
the objects to crawl, the records it ignores (with the reason) and the format's name.
Malformed input raises `EventError`, whose message names the bad field (the receiver's 400).

Formats, detected from the body by `parse_document`:
- ``s3``: an S3 event notification (``Records[]``), as SNS and S3-compatible stores send it.
- ``minio``: MinIO's webhook (``EventName``, ``Key`` and S3-style ``Records[]``).
- ``eventbridge``: an EventBridge "Object Created" event (``source: aws.s3``, ``detail``).
- ``sns``: an SNS envelope (``Type``, ``TopicArn``, ``Message``); see `sns.py` for its checks.
- ``minimal``: ``{"bucket": "...", "object": {"key": "..."}}`` (the bucket may default).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crawljob.resource import DEFAULT_OUTPUT_PREFIX, ObjectRef

KEY_MISSING = "S3 object key missing in POST request"
KEY_BLANK = "S3 object key in POST request is blank"

SNS_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})


# S3's limits: keys are at most 1,024 bytes of UTF-8; object sizes and every other number we take
# stay within the integers JSON clients (and the CRD's int64) hold exactly.
MAX_KEY_BYTES = 1024
MAX_SIZE = 2**53 - 1
MAX_FIELD_LENGTH = 1024
DEFAULT_MAX_RECORDS = 100

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3")


class EventError(Exception):
    """The body is malformed; *message* says what is wrong, *field* names where (a JSON path).

    *status* is the HTTP answer: 400, or 413 when the body asks for too much at once.
    """

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def as_dict(self) -> dict[str, str]:
        answer = {"error": self.message}
        if self.field:
            answer["field"] = self.field
        return answer


@dataclass(frozen=True)
class Target:
    """One object to crawl: its reference (key decoded) and the key exactly as the event carried it."""

    ref: ObjectRef
    raw_key: str


@dataclass(frozen=True)
class Ignored:
    """A record acknowledged without a CrawlJob, and why."""

    reason: str
    bucket: str | None = None
    key: str | None = None

    def as_dict(self) -> dict[str, str]:
        answer = {"reason": self.reason}
        if self.bucket is not None:
            answer["bucket"] = self.bucket
        if self.key is not None:
            answer["key"] = self.key
        return answer


@dataclass(frozen=True)
class Parsed:
    """What one body asks for."""

    format: str
    targets: list[Target] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)


@dataclass(frozen=True)
class SnsEnvelope:
    """An SNS HTTP(S) delivery: checked by `sns.py` before its Message is parsed."""

    type: str
    topic_arn: str
    fields: Mapping[str, str]

    @property
    def message(self) -> str:
        return self.fields.get("Message", "")


@dataclass(frozen=True)
class Filters:
    """Which objects may start a crawl. Empty tuples allow everything."""

    buckets: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    # Where crawl outputs go: (bucket or None for any bucket, key prefix). Loop guard.
    output_locations: tuple[tuple[str | None, str], ...] = ((None, DEFAULT_OUTPUT_PREFIX),)


def load_json(body: bytes) -> Any:
    """The JSON document in *body*, or EventError."""
    if not body.strip():
        raise EventError("request body is empty: expected a JSON event")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EventError(f"request body is not UTF-8 text (byte {exc.start})") from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise EventError(f"request body is not valid JSON: {exc}") from exc


def detect_format(document: Any) -> str:
    """The format name of *document* (see the module docstring); EventError if none fits."""
    if not isinstance(document, dict):
        raise EventError(f"expected a JSON object, got {_json_type(document)}")
    if isinstance(document.get("Type"), str) and document["Type"] in SNS_TYPES and "TopicArn" in document:
        return "sns"
    if document.get("Event") == "s3:TestEvent":
        return "s3-test"
    if "Records" in document:
        if "EventName" in document or _first_source(document.get("Records")) == "minio:s3":
            return "minio"
        return "s3"
    if document.get("source") == "aws.s3" and "detail" in document:
        return "eventbridge"
    return "minimal"


def _test_event(format_name: str, document: Mapping[str, Any]) -> Parsed:
    """S3's s3:TestEvent (sent when notifications are configured): nothing to crawl."""
    ignored = Ignored(
        "s3:TestEvent: test notification, nothing to crawl", bucket=_str_or_none(document.get("Bucket"))
    )
    return Parsed(format_name, ignored=[ignored])


def parse_document(
    document: Any, default_bucket: str | None = None, max_records: int = DEFAULT_MAX_RECORDS
) -> Parsed | SnsEnvelope:
    """Dispatch *document* to its format's parser; more than *max_records* records is a 413."""
    kind = detect_format(document)
    if kind == "sns":
        return parse_sns_envelope(document)
    if kind == "s3-test":
        return _test_event("s3", document)
    if kind in ("s3", "minio"):
        return parse_records(document, kind, max_records)
    if kind == "eventbridge":
        return parse_eventbridge(document)
    return parse_minimal(document, default_bucket)


def parse_records(
    document: Mapping[str, Any], kind: str = "s3", max_records: int = DEFAULT_MAX_RECORDS
) -> Parsed:
    """S3 event notification records (also MinIO's and Ceph's): keys are URL-encoded, ``+`` is a space."""
    records = document.get("Records")
    if not isinstance(records, list) or not records:
        raise EventError("Records must be a non-empty list of S3 event records", "Records")
    check_record_count(len(records), max_records)
    parsed = Parsed(kind)
    for index, record in enumerate(records):
        path = f"Records[{index}]"
        if not isinstance(record, dict):
            raise EventError(f"{path} must be an object, got {_json_type(record)}", path)
        event_name = record.get("eventName")
        if not isinstance(event_name, str) or not event_name:
            raise EventError(f"{path}.eventName is missing", f"{path}.eventName")
        s3 = _object_at(record, "s3", path)
        bucket = _bucket_at(_object_at(s3, "bucket", f"{path}.s3"), "name", f"{path}.s3.bucket")
        obj = _object_at(s3, "object", f"{path}.s3", missing_message=KEY_MISSING)
        raw_key = _key_at(obj, "key", f"{path}.s3.object")
        key = decode_url_key(raw_key, f"{path}.s3.object.key")
        # AWS says "ObjectCreated:Put"; MinIO and newer Ceph say "s3:ObjectCreated:Put".
        name = event_name.removeprefix("s3:")
        if not name.startswith("ObjectCreated:"):
            parsed.ignored.append(Ignored(f"event {event_name} is not an object creation", bucket, key))
            continue
        ref = ObjectRef(
            bucket=bucket,
            key=key,
            version_id=_optional_str(obj, "versionId", f"{path}.s3.object"),
            etag=_optional_str(obj, "eTag", f"{path}.s3.object"),
            size=_optional_size(obj, "size", f"{path}.s3.object"),
            sequencer=_optional_str(obj, "sequencer", f"{path}.s3.object"),
            event_time=_optional_str(record, "eventTime", path),
        )
        parsed.targets.append(Target(ref, raw_key))
    return parsed


def parse_eventbridge(document: Mapping[str, Any]) -> Parsed:
    """An EventBridge S3 event; keys are taken literally (AWS documents no encoding for them)."""
    detail = _object_at(document, "detail", "")
    detail_type = document.get("detail-type")
    bucket = _bucket_at(_object_at(detail, "bucket", "detail"), "name", "detail.bucket")
    obj = _object_at(detail, "object", "detail", missing_message=KEY_MISSING)
    key = _key_at(obj, "key", "detail.object")
    check_key(key, "detail.object.key")
    if detail_type != "Object Created":
        return Parsed(
            "eventbridge", ignored=[Ignored(f"event {detail_type!r} is not an object creation", bucket, key)]
        )
    ref = ObjectRef(
        bucket=bucket,
        key=key,
        version_id=_optional_str(obj, "version-id", "detail.object")
        or _optional_str(obj, "versionId", "detail.object"),
        etag=_optional_str(obj, "etag", "detail.object") or _optional_str(obj, "eTag", "detail.object"),
        size=_optional_size(obj, "size", "detail.object"),
        sequencer=_optional_str(obj, "sequencer", "detail.object"),
        event_time=_optional_str(document, "time", ""),
    )
    return Parsed("eventbridge", targets=[Target(ref, key)])


def parse_minimal(document: Mapping[str, Any], default_bucket: str | None = None) -> Parsed:
    """``{"bucket": "b", "object": {"key": "k", "versionId"?, "eTag"?, "size"?}}``; the key is literal.

    ``{"bucket": "b", "key": "k"}`` is accepted too. Without a bucket, *default_bucket* is used.
    """
    obj = document.get("object")
    if obj is None:
        obj = {key: value for key, value in document.items() if key != "bucket"}
        path = ""
    elif isinstance(obj, dict):
        path = "object"
    else:
        raise EventError(f"object must be an object with a key, got {_json_type(obj)}", "object")
    key = _key_at(obj, "key", path)
    check_key(key, _join(path, "key"))
    bucket_value = document.get("bucket", default_bucket)
    if bucket_value is None:
        raise EventError("bucket missing in POST request (and no default bucket is configured)", "bucket")
    if not isinstance(bucket_value, str) or not bucket_value.strip():
        raise EventError("bucket must be a non-blank string", "bucket")
    check_bucket(bucket_value, "bucket")
    ref = ObjectRef(
        bucket=bucket_value,
        key=key,
        version_id=_optional_str(obj, "versionId", path),
        etag=_optional_str(obj, "eTag", path) or _optional_str(obj, "etag", path),
        size=_optional_size(obj, "size", path),
        sequencer=_optional_str(obj, "sequencer", path),
    )
    return Parsed("minimal", targets=[Target(ref, key)])


def parse_sns_envelope(document: Mapping[str, Any]) -> SnsEnvelope:
    """The string fields of an SNS envelope (all of them are strings in SNS's JSON)."""
    fields: dict[str, str] = {}
    for name, value in document.items():
        if isinstance(value, str):
            fields[name] = value
        elif value is not None:
            raise EventError(f"SNS field {name} must be a string, got {_json_type(value)}", name)
    for required in (
        "Type",
        "TopicArn",
        "MessageId",
        "Timestamp",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
    ):
        if not fields.get(required):
            raise EventError(f"SNS message field {required} is missing", required)
    if fields["Type"] != "UnsubscribeConfirmation" and "Message" not in fields:
        raise EventError("SNS message field Message is missing", "Message")
    return SnsEnvelope(type=fields["Type"], topic_arn=fields["TopicArn"], fields=fields)


def parse_sns_message(message: str, max_records: int = DEFAULT_MAX_RECORDS) -> Parsed:
    """The S3 event inside an SNS Notification's ``Message`` string."""
    try:
        document = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise EventError(f"SNS Message is not an S3 event (not JSON: {exc})", "Message") from exc
    kind = detect_format(document) if isinstance(document, dict) else "invalid"
    if kind == "s3-test":
        return _test_event("sns", document)
    if kind not in ("s3", "minio"):
        raise EventError("SNS Message is not an S3 event notification (no Records)", "Message")
    inner = parse_records(document, "s3", max_records)
    return Parsed("sns", inner.targets, inner.ignored)


def decode_url_key(raw_key: str, path: str) -> str:
    """An S3 notification key as S3 shows it: ``+`` is a space, ``%XX`` are UTF-8 bytes."""
    try:
        key = urllib.parse.unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError as exc:
        raise EventError(f"{path} is not valid URL-encoded UTF-8: {raw_key!r}", path) from exc
    if not key.strip():
        raise EventError(KEY_BLANK, path)
    check_key(key, path)
    return key


def check_record_count(count: int, limit: int) -> None:
    """A 413 naming the limit when one delivery holds more than *limit* records."""
    if count > limit:
        raise EventError(
            f"the body holds {count} records, more than the limit of {limit} per delivery "
            "(CRAWLJOB_MAX_RECORDS): split it into smaller deliveries",
            "Records",
            status=413,
        )


def check_key(key: str, path: str) -> None:
    """Refuse a key S3 cannot hold: a NUL, or more than 1,024 bytes of UTF-8."""
    if "\0" in key:
        raise EventError(f"{path} contains a NUL character, which no S3 key can hold", path)
    if not _is_utf8(key):
        raise EventError(f"{path} is not valid Unicode (S3 keys are UTF-8)", path)
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise EventError(f"{path} is {size} bytes of UTF-8; S3 keys hold at most {MAX_KEY_BYTES}", path)


def bucket_name_problem(name: str) -> str | None:
    """Why *name* breaks S3's bucket naming rules, or None."""
    if not _BUCKET_NAME.fullmatch(name):
        return (
            "3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
        )
    if ".." in name:
        return "no two adjacent dots"
    if _IP_ADDRESS.fullmatch(name):
        return "not formatted as an IP address"
    if name.startswith(_RESERVED_BUCKET_PREFIXES) or name.endswith(_RESERVED_BUCKET_SUFFIXES):
        return "no reserved prefix (xn--, sthree-) or suffix (-s3alias, --ol-s3)"
    return None


def check_bucket(name: str, path: str) -> None:
    """EventError (400) naming *path* unless *name* is a valid S3 bucket name."""
    problem = bucket_name_problem(name)
    if problem is not None:
        shown = name if len(name) <= 70 else name[:67] + "..."
        raise EventError(f"{path} {shown!r} is not a valid S3 bucket name ({problem})", path)


def apply_filters(parsed: Parsed, filters: Filters) -> Parsed:
    """Move targets the filters refuse (and folder placeholders) to the ignored list, with the reason."""
    kept: list[Target] = []
    ignored = list(parsed.ignored)
    for target in parsed.targets:
        reason = refusal(target.ref, filters)
        if reason is None:
            kept.append(target)
        else:
            ignored.append(Ignored(reason, target.ref.bucket, target.ref.key))
    return Parsed(parsed.format, kept, ignored)


def refusal(ref: ObjectRef, filters: Filters) -> str | None:
    """Why *ref* must not be crawled, or None."""
    if ref.key.endswith("/") and not ref.size:
        return "folder placeholder (key ends with / and the object is empty)"
    for bucket, prefix in filters.output_locations:
        if (bucket is None or bucket == ref.bucket) and ref.key.startswith(prefix):
            where = f"s3://{bucket}/{prefix}" if bucket else f"{prefix} (any bucket)"
            return f"key is under the crawl output location {where}: loop guard"
    if filters.buckets and ref.bucket not in filters.buckets:
        return f"bucket {ref.bucket} is not in the allowed buckets"
    if filters.prefixes and not ref.key.startswith(filters.prefixes):
        return "key does not start with an allowed prefix (" + ", ".join(filters.prefixes) + ")"
    if filters.suffixes and not ref.key.endswith(filters.suffixes):
        return "key does not end with an allowed suffix (" + ", ".join(filters.suffixes) + ")"
    return None


def output_location(uri: str) -> tuple[str | None, str]:
    """``s3://bucket/prefix/`` → ("bucket", "prefix/"), for the loop guard; ValueError otherwise."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri.strip())
    if not match:
        raise ValueError(f"output URI must look like s3://bucket/prefix/, got {uri!r}")
    return match.group(1), match.group(2)


# ---- field helpers: each failure names the JSON path of the bad field ----


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _first_source(records: Any) -> Any:
    if isinstance(records, list) and records and isinstance(records[0], dict):
        return records[0].get("eventSource")
    return None


def _object_at(
    container: Mapping[str, Any], name: str, path: str, missing_message: str | None = None
) -> Mapping[str, Any]:
    value = container.get(name)
    where = _join(path, name)
    if value is None:
        raise EventError(missing_message or f"{where} is missing", where)
    if not isinstance(value, dict):
        raise EventError(f"{where} must be an object, got {_json_type(value)}", where)
    return value


def _key_at(container: Mapping[str, Any], name: str, path: str) -> str:
    value = container.get(name)
    where = _join(path, name)
    if value is None:
        raise EventError(KEY_MISSING, where)
    if not isinstance(value, str):
        raise EventError(f"{where} must be a string, got {_json_type(value)}", where)
    if not value.strip():
        raise EventError(KEY_BLANK, where)
    if len(value) > 3 * MAX_KEY_BYTES:  # even URL-encoded, a longer text cannot be an S3 key
        raise EventError(f"{where} is too long to be an S3 key (at most {MAX_KEY_BYTES} bytes)", where)
    if not _is_utf8(value):
        raise EventError(f"{where} is not valid Unicode (S3 keys are UTF-8)", where)
    return value


def _bucket_at(container: Mapping[str, Any], name: str, path: str) -> str:
    value = _required_str(container, name, path)
    check_bucket(value, _join(path, name))
    return value


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _required_str(container: Mapping[str, Any], name: str, path: str) -> str:
    value = container.get(name)
    where = _join(path, name)
    if not isinstance(value, str) or not value.strip():
        raise EventError(f"{where} must be a non-blank string", where)
    return value


def _optional_str(container: Mapping[str, Any], name: str, path: str) -> str | None:
    value = container.get(name)
    if value is None or value == "":
        return None
    where = _join(path, name)
    if not isinstance(value, str):
        raise EventError(f"{where} must be a string, got {_json_type(value)}", where)
    if len(value) > MAX_FIELD_LENGTH or "\0" in value or not _is_utf8(value):
        raise EventError(
            f"{where} must be UTF-8 text without NUL, at most {MAX_FIELD_LENGTH} characters", where
        )
    return value


def _optional_size(container: Mapping[str, Any], name: str, path: str) -> int | None:
    value = container.get(name)
    if value is None or value == "":
        return None
    # Digits are counted before int(): a 5,000-digit string must be a 400, not int()'s ValueError.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
        where = _join(path, name)
        raise EventError(f"{where} must be an integer from 0 to {MAX_SIZE}", where)
    return value


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
