"""The completion signal, decided: which CloudEvents a finished CrawlJob still owes to which sinks
(pure: no I/O; `notify.py` sends them).

One event per run and terminal phase (Succeeded or Failed) per sink. Its id is stable — the
CrawlJob's uid, run and phase — so a receiver deduplicates the redeliveries that at-least-once
delivery implies (an operator restarting between sending and recording sends again, same id). What
was delivered is recorded in `status.notifications` (a hash of the sink, never its URL, which may
carry credentials), which is how a restarted operator knows what is still owed.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from crawljob import resource
from crawljob.models import CrawlJobStatus
from crawljob.times import parse_time

NOTIFIED_PHASES = ("Succeeded", "Failed")
EVENT_TYPES = {"Succeeded": "io.crawljob.crawljob.succeeded", "Failed": "io.crawljob.crawljob.failed"}
# Crawls that ended longer ago than this are not announced (e.g. when sinks are first configured on
# an operator with a long history); an operator down for longer loses the signal of those crawls.
WINDOW = datetime.timedelta(hours=24)
MAX_RETRY_SECONDS = 300.0
WARN_AFTER_FAILURES = 5


def sink_key(url: str) -> str:
    """How a sink is named in the status (its URL may carry a token)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def sinks_of(crawljob: Mapping[str, Any], default_sinks: Sequence[str]) -> list[str]:
    """The operator's sinks, then the CrawlJob's own (spec.notify.sinks), each once."""
    own = ((crawljob.get("spec") or {}).get("notify") or {}).get("sinks") or []
    return list(dict.fromkeys([*default_sinks, *(str(url) for url in own)]))


def event_id(crawljob: Mapping[str, Any]) -> str:
    """`<uid>.<run>.<phase>`: the same for every delivery of one outcome, different for a re-run's."""
    uid = (crawljob.get("metadata") or {}).get("uid")
    phase = str((crawljob.get("status") or {}).get("phase") or "").lower()
    return f"{uid}.{CrawlJobStatus.parse(crawljob.get('status') or {}).run}.{phase}"


def owed(crawljob: Mapping[str, Any], default_sinks: Sequence[str], now: datetime.datetime) -> list[str]:
    """The sinks that have not acknowledged the CrawlJob's current outcome yet."""
    status = crawljob.get("status") or {}
    if status.get("phase") not in NOTIFIED_PHASES or not (crawljob.get("metadata") or {}).get("uid"):
        return []
    sinks = sinks_of(crawljob, default_sinks)
    if not sinks:  # the common case without notifications: nothing more to look at
        return []
    finished = parse_time(status.get("completionTime"))
    if finished is None or now - finished > WINDOW:
        return []
    identity = event_id(crawljob)
    delivered = {
        str(item.get("sink")) for item in status.get("notifications") or [] if item.get("id") == identity
    }
    return [url for url in sinks if sink_key(url) not in delivered]


def recorded(crawljob: Mapping[str, Any], url: str, now: str) -> list[dict[str, str]]:
    """status.notifications once *url* acknowledged the current outcome (one entry per sink)."""
    key = sink_key(url)
    kept = [
        item for item in (crawljob.get("status") or {}).get("notifications") or [] if item.get("sink") != key
    ]
    return [*kept, {"sink": key, "id": event_id(crawljob), "time": now}]


def event(crawljob: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(CloudEvents attributes, data) of the CrawlJob's current outcome."""
    metadata = crawljob.get("metadata") or {}
    status = crawljob.get("status") or {}
    namespace, name = metadata.get("namespace") or "default", metadata.get("name")
    phase = str(status.get("phase"))
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id(crawljob),
        "type": EVENT_TYPES[phase],
        "source": f"/apis/{resource.API_VERSION}/namespaces/{namespace}/{resource.PLURAL}/{name}",
        "subject": str(name),
        "datacontenttype": "application/json",
    }
    finished = parse_time(status.get("completionTime"))
    if finished is not None:
        attributes["time"] = finished
    data = {
        "name": name,
        "namespace": namespace,
        "uid": metadata.get("uid"),
        "run": CrawlJobStatus.parse(crawljob.get("status") or {}).run,
        "phase": phase,
        "reason": status.get("reason"),
        "message": status.get("message"),
        "source": spec.get("source") if isinstance(spec := crawljob.get("spec"), dict) else None,
        "result": status.get("result"),
    }
    return attributes, data


def retry_delay(failures: int, first: float) -> float:
    """Exponential backoff: *first*, doubling per failure, at most MAX_RETRY_SECONDS."""
    return float(min(MAX_RETRY_SECONDS, first * 2 ** max(0, failures - 1)))
