"""SQS message bodies → the CrawlJobs to create, and the queue status (pure: no I/O).

A message holds what a webhook POST holds (`crawljob.events`): S3 event records, the same wrapped
in SNS (SNS → SQS delivers the envelope unless raw delivery is on), or an EventBridge event. SNS
signatures are not checked here: SQS authenticates its senders (the queue's access policy), so
the envelope is only unwrapped. The I/O (receive, create, delete, status) is in `sqs`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crawljob import events, resource, sources

# Records per message, as the receiver's default per delivery (S3 sends one record per event).
MAX_RECORDS = events.DEFAULT_MAX_RECORDS
CONDITION = "QueueReady"


@dataclass(frozen=True)
class Wanted:
    """One CrawlJob a message asks for: its object and the manifests of its names, in order of attempt."""

    ref: resource.ObjectRef
    source: str
    manifests: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Accepted:
    """A well-formed message: the CrawlJobs it needs (may be none) and what it ignores, with reasons."""

    wanted: list[Wanted] = field(default_factory=list)
    ignored: list[events.Ignored] = field(default_factory=list)


@dataclass(frozen=True)
class Malformed:
    """A message that is no S3 event: left in the queue (its redrive policy decides), with an Event."""

    reason: str


def read_message(body: str) -> events.Parsed:
    """The objects of one message body; EventError when it is no event the webhook would accept."""
    document = events.load_json(body.encode("utf-8", errors="surrogatepass"))
    parsed = events.parse_document(document, default_bucket=None, max_records=MAX_RECORDS)
    if isinstance(parsed, events.SnsEnvelope):
        if parsed.type != "Notification":
            # SNS confirms SQS subscriptions itself; nothing to crawl, nothing to keep.
            return events.Parsed("sns", ignored=[events.Ignored(f"SNS {parsed.type}: nothing to crawl")])
        return events.parse_sns_message(parsed.message, MAX_RECORDS)
    return parsed


def decide(
    body: str, known: Iterable[sources.Source], namespace: str, attempts: int = 4
) -> Accepted | Malformed:
    """What to do with one message: the CrawlJobs of its objects, each routed as the receiver routes.

    Every object gets the template and label of the CrawlSource it belongs to (longest prefix,
    `sources.select_source`); an object of no source is ignored (this feed does not want it).
    """
    try:
        parsed = read_message(body)
    except events.EventError as exc:
        return Malformed(exc.message)
    candidates = list(known)
    accepted = Accepted(ignored=list(parsed.ignored))
    for target in parsed.targets:
        ref = target.ref
        chosen = sources.select_source(candidates, ref.bucket, ref.key)
        if chosen is None:
            accepted.ignored.append(events.Ignored("matches no CrawlSource", ref.bucket, ref.key))
            continue
        manifests = tuple(
            sources.apply_source(
                resource.crawljob_manifest(ref, namespace, raw_key=target.raw_key, attempt=attempt), chosen
            )
            for attempt in range(attempts)
        )
        accepted.wanted.append(Wanted(ref, chosen.name, manifests))
    return accepted


def is_first_receipt(attributes: Mapping[str, str]) -> bool:
    """Whether SQS delivers the message for the first time (Events are posted once per message)."""
    return attributes.get("ApproximateReceiveCount", "1") == "1"


@dataclass
class Counters:
    """Totals of one queue, kept in the CrawlSource's status.sqs (restarts continue from them)."""

    received: int = 0
    deleted: int = 0
    malformed: int = 0
    created: int = 0

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Counters:
        sqs = status.get("sqs") or {}
        values = {name: sqs.get(key) for name, key in _COUNTER_FIELDS.items()}
        return cls(**{name: value if isinstance(value, int) else 0 for name, value in values.items()})


_COUNTER_FIELDS = {
    "received": "messagesReceived",
    "deleted": "messagesDeleted",
    "malformed": "messagesMalformed",
    "created": "crawljobsCreated",
}


def queue_status(
    queue_url: str,
    counters: Counters,
    current: Mapping[str, Any],
    now: datetime.datetime,
    error: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """status.sqs: the counters, the last poll and the QueueReady condition (False with the SQS error code)."""
    previous = (current.get("sqs") or {}).get("condition") or {}
    state, reason, message = (
        ("True", "Polling", f"long-polling {queue_url}")
        if error is None
        else (
            "False",
            error[0],
            error[1],
        )
    )
    changed = previous.get("status") != state or previous.get("reason") != reason
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "queueUrl": queue_url,
        **{key: getattr(counters, name) for name, key in _COUNTER_FIELDS.items()},
        "lastPollTime": stamp,
        "condition": {
            "type": CONDITION,
            "status": state,
            "reason": reason,
            "message": message,
            "lastTransitionTime": stamp if changed else previous.get("lastTransitionTime", stamp),
        },
    }


def status_changed(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether writing *patch* (status.sqs) changes anything but lastPollTime (fewer API writes)."""
    before = dict(current.get("sqs") or {})
    after = dict(patch)
    before.pop("lastPollTime", None)
    after.pop("lastPollTime", None)
    return before != after
