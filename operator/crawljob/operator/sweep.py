"""Sweep decisions for CrawlSources (pure): when a sweep is due, which listed objects get a CrawlJob,
how the watermark moves, which CrawlJobs garbage collection must keep, and the status to write.

The I/O (listing S3, creating CrawlJobs, writing status) is in `sweeper`.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crawljob import resource
from crawljob.operator import conditions
from crawljob.sources import (
    ANNOTATION_SWEEP,
    InvalidSource,
    Source,
    select_source,
    source_from_body,
    source_of_crawljob,
)
from crawljob.times import format_time, parse_time

# Jitter spreads the sweeps of many sources: up to this fraction of the interval, at most JITTER_MAX.
JITTER_FRACTION = 0.1
JITTER_MAX_SECONDS = 300.0
# A sweep stopped at the per-pass cap continues after this pause (when the queue has room).
CONTINUE_SECONDS = 2.0
# After a transient failure (throttling, S3 or API unavailable) the pass is retried this soon.
RETRY_SECONDS = 30.0
# S3 error codes that no retry will fix: the source is Stalled until its spec or the bucket changes.
STALLING_ERRORS = frozenset(
    {
        "AccessDenied",
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "InvalidBucketName",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
    }
)


@dataclass(frozen=True)
class Listed:
    """One object version as ListObjectsV2 / ListObjectVersions shows it."""

    key: str
    last_modified: datetime.datetime
    etag: str | None = None
    version_id: str | None = None
    size: int | None = None

    def ref(self, bucket: str) -> resource.ObjectRef:
        """The ObjectRef the webhook path builds for this object version (hence the same name).

        Events carry versionId in a versioned bucket (and never "null"), eTag always: so does this.
        """
        version = None if self.version_id in (None, "", "null") else self.version_id
        return resource.ObjectRef(
            bucket=bucket,
            key=self.key,
            version_id=version,
            etag=(self.etag or "").strip('"') or None,
            size=self.size,
        )


def jitter_seconds(namespace: str, name: str, interval_seconds: float) -> float:
    """A stable per-source offset in [0, min(10% of the interval, 5 min)): sources spread, restarts don't move it."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * min(interval_seconds * JITTER_FRACTION, JITTER_MAX_SECONDS)


def sweep_requested(annotations: Mapping[str, Any] | None, status: Mapping[str, Any]) -> str | None:
    """The crawljob.io/sweep annotation's value when it asks for a sweep not made yet, else None."""
    token = (annotations or {}).get(ANNOTATION_SWEEP)
    if not token or str(token) == status.get("sweepToken"):
        return None
    return str(token)


def due_at(
    source: Source, status: Mapping[str, Any], annotations: Mapping[str, Any] | None, now: datetime.datetime
) -> datetime.datetime | None:
    """When the next pass of *source* should run; None while it must not (suspended, interval 0).

    A new source, a changed spec, a sweep request or an unfinished sweep run now (or soon); otherwise
    the schedule written in status.nextSweepTime holds, so restarts cause no burst of sweeps.
    """
    if source.suspend:
        return None
    if sweep_requested(annotations, status):
        return now
    if source.interval_seconds <= 0 and not status.get("resumeAfter"):
        return None
    if source.generation is not None and status.get("observedGeneration") != source.generation:
        return now
    scheduled = parse_time(status.get("nextSweepTime"))
    return now if scheduled is None else scheduled


def next_sweep_time(source: Source, finished: datetime.datetime) -> datetime.datetime | None:
    """The time of the next periodic sweep after one finished at *finished* (None: no periodic sweep)."""
    if not source.sweeps:
        return None
    delay = source.interval_seconds + jitter_seconds(source.namespace, source.name, source.interval_seconds)
    return finished + datetime.timedelta(seconds=delay)


def lower_bound(source: Source, watermark: datetime.datetime | None) -> datetime.datetime | None:
    """Objects last modified before this are not swept: the later of spec.since and the watermark."""
    bounds = [moment for moment in (source.since, watermark) if moment is not None]
    return max(bounds) if bounds else None


def wanted(
    source: Source, listed: Listed, bound: datetime.datetime | None, existing: Container[str]
) -> tuple[bool, bool]:
    """(matches the source, needs a CrawlJob) for one listed object; *existing* holds CrawlJob names."""
    if not source.matches_key(listed.key):
        return False, False
    if bound is not None and listed.last_modified < bound:
        return False, False
    return True, resource.crawljob_name(listed.ref(source.bucket)) not in existing


def advanced_watermark(
    current: datetime.datetime | None, sweep_start: datetime.datetime, lookback_seconds: float
) -> datetime.datetime:
    """The watermark after a complete sweep that started at *sweep_start*: never moves back."""
    candidate = sweep_start - datetime.timedelta(seconds=lookback_seconds)
    return candidate if current is None else max(current, candidate)


def check_lookback(lookback_seconds: float, finished_ttl_seconds: int | None) -> None:
    """ValueError when the lookback reaches the CrawlJob TTL: objects inside the lookback would then be
    swept again after their CrawlJobs were collected."""
    if lookback_seconds < 0:
        raise ValueError("--sweep-lookback-seconds must not be negative")
    if finished_ttl_seconds is not None and lookback_seconds >= finished_ttl_seconds:
        raise ValueError(
            f"--sweep-lookback-seconds ({lookback_seconds:g}) must be shorter than "
            f"--finished-ttl-seconds ({finished_ttl_seconds}): a sweep would re-run objects whose "
            "CrawlJobs were garbage-collected"
        )


def protected_from_gc(
    crawljob: Mapping[str, Any], sources: Sequence[Source], watermarks: Mapping[str, Any]
) -> bool:
    """Whether garbage collection must keep this CrawlJob: a sweep of its source still looks at its
    object (the CrawlJob was created at or after the source's watermark), so deleting it would make
    the next sweep run the object again. *watermarks* maps source name → status.watermark.
    (The lookback absorbs the skew between S3's clock, LastModified, and the API server's.)
    """
    spec_source = (crawljob.get("spec") or {}).get("source") or {}
    metadata = crawljob.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    candidates = [source for source in sources if source.namespace == namespace and source.sweeps]
    labelled = source_of_crawljob(crawljob)
    owner = next((source for source in candidates if source.name == labelled), None) or select_source(
        candidates, str(spec_source.get("bucket") or ""), str(spec_source.get("key") or "")
    )
    if owner is None:
        return False
    watermark = parse_time(watermarks.get(owner.name))
    if watermark is None:
        return True  # no sweep completed yet: it looks at every object
    created = parse_time(metadata.get("creationTimestamp"))
    if created is None:
        return True
    return created >= watermark


def protected_names(
    source_bodies: Iterable[Mapping[str, Any]], namespace: str, crawljobs: Iterable[Mapping[str, Any]]
) -> set[str]:
    """Names of the CrawlJobs (bodies) of *namespace* that garbage collection must keep (protected_from_gc)."""
    known: list[Source] = []
    watermarks: dict[str, Any] = {}
    for body in source_bodies:
        if str((body.get("metadata") or {}).get("namespace") or "default") != namespace:
            continue
        try:
            source = source_from_body(body)
        except InvalidSource:
            continue
        known.append(source)
        watermarks[source.name] = (body.get("status") or {}).get("watermark")
    if not known:
        return set()
    return {
        str((crawljob.get("metadata") or {}).get("name"))
        for crawljob in crawljobs
        if protected_from_gc(crawljob, known, watermarks)
    }


@dataclass
class PassResult:
    """What one pass did; `complete` when the listing reached its end without errors."""

    started: datetime.datetime
    listed: int = 0
    matched: int = 0
    created: list[str] = field(default_factory=list)
    existing: int = 0
    refused: list[str] = field(default_factory=list)  # CrawlJobs the API refused (422): skipped
    collisions: list[str] = field(default_factory=list)
    complete: bool = False
    capped: bool = False
    resume_after: str | None = None
    error_code: str | None = None  # S3 error code, or "Unavailable" for a transient failure
    error_message: str = ""
    duration_seconds: float = 0.0


def status_after_pass(
    source: Source,
    current: Mapping[str, Any],
    result: PassResult,
    token: str | None,
    lookback_seconds: float,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The status patch after a pass: counters, schedule, watermark and Ready/Reconciling/Stalled."""
    stamp = format_time(now)
    sweep_start = parse_time(current.get("sweepStartTime")) if current.get("resumeAfter") else None
    sweep_start = sweep_start or result.started
    patch: dict[str, Any] = {
        "observedGeneration": source.generation,
        "objectsListed": result.listed,
        "objectsMatched": result.matched,
        "crawljobsCreated": len(result.created),
        "crawljobsCreatedTotal": int(current.get("crawljobsCreatedTotal") or 0) + len(result.created),
        "lastSweepDurationSeconds": round(result.duration_seconds, 3),
    }
    if token is not None:
        patch["sweepToken"] = token
    found = conditions.set_condition
    items = list(current.get("conditions") or [])
    generation = source.generation
    if result.error_code is not None:
        stalled = result.error_code in STALLING_ERRORS
        message = (
            f"cannot list s3://{source.bucket}/{source.prefix}: {result.error_code}: {result.error_message}"
        )
        retry = source.interval_seconds if stalled and source.interval_seconds > 0 else RETRY_SECONDS
        patch["nextSweepTime"] = format_time(now + datetime.timedelta(seconds=retry))
        patch["message"] = message[:1024]
        items = found(items, "Ready", False, result.error_code, message, stamp, generation)
        items = found(
            items,
            "Stalled",
            stalled,
            result.error_code if stalled else "Retrying",
            message if stalled else "",
            stamp,
            generation,
        )
        items = found(
            items,
            "Reconciling",
            not stalled,
            "RetryScheduled" if not stalled else "Stalled",
            "" if stalled else message,
            stamp,
            generation,
        )
        patch["conditions"] = items
        return patch
    if result.capped:
        patch["resumeAfter"] = result.resume_after
        patch["sweepStartTime"] = format_time(sweep_start)
        patch["nextSweepTime"] = format_time(now + datetime.timedelta(seconds=CONTINUE_SECONDS))
        message = (
            f"sweep in progress: {len(result.created)} CrawlJobs created this pass (the per-pass cap); "
            f"continuing after {result.resume_after!r}"
        )
        patch["message"] = message
        items = found(items, "Reconciling", True, "Progressing", message, stamp, generation)
        items = found(items, "Stalled", False, "Progressing", "", stamp, generation)
        patch["conditions"] = items
        return patch
    watermark = advanced_watermark(parse_time(current.get("watermark")), sweep_start, lookback_seconds)
    next_time = next_sweep_time(source, now)
    patch.update(
        resumeAfter=None,
        sweepStartTime=None,
        lastSweepTime=stamp,
        watermark=format_time(watermark),
        nextSweepTime=format_time(next_time) if next_time else None,
    )
    message = (
        f"swept s3://{source.bucket}/{source.prefix}: {result.listed} listed, {result.matched} matched, "
        f"{len(result.created)} CrawlJobs created"
    )
    if result.refused:
        message += f"; {len(result.refused)} refused by the API"
    if result.collisions:
        message += f"; {len(result.collisions)} name collisions"
    patch["message"] = message
    items = found(items, "Ready", True, "Swept", message, stamp, generation)
    items = found(items, "Reconciling", False, "Swept", "", stamp, generation)
    items = found(items, "Stalled", False, "Swept", "", stamp, generation)
    patch["conditions"] = items
    return patch


def invalid_status(
    current: Mapping[str, Any], generation: int | None, message: str, now: datetime.datetime
) -> dict[str, Any]:
    """The status of a source whose spec cannot be used: Stalled/InvalidSpec, no schedule."""
    stamp = format_time(now)
    items = list(current.get("conditions") or [])
    items = conditions.set_condition(items, "Ready", False, "InvalidSpec", message, stamp, generation)
    items = conditions.set_condition(items, "Stalled", True, "InvalidSpec", message, stamp, generation)
    items = conditions.set_condition(items, "Reconciling", False, "InvalidSpec", "", stamp, generation)
    return {
        "observedGeneration": generation,
        "nextSweepTime": None,
        "message": message[:1024],
        "conditions": items,
    }


def suspended_status(current: Mapping[str, Any], source: Source, now: datetime.datetime) -> dict[str, Any]:
    """The status of a suspended (or webhook-only) source: not Ready for sweeps, nothing scheduled."""
    stamp = format_time(now)
    reason = "Suspended" if source.suspend else "SweepDisabled"
    message = (
        "suspended: no sweeps until spec.suspend is false" if source.suspend else "interval 0: no sweeps"
    )
    items = list(current.get("conditions") or [])
    items = conditions.set_condition(
        items, "Ready", not source.suspend, reason, message, stamp, source.generation
    )
    items = conditions.set_condition(items, "Reconciling", False, reason, "", stamp, source.generation)
    items = conditions.set_condition(items, "Stalled", False, reason, "", stamp, source.generation)
    return {
        "observedGeneration": source.generation,
        "nextSweepTime": None,
        "message": message,
        "conditions": items,
    }


def needs_status(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether *patch* changes anything of *current* (conditions compared without their times)."""

    def strip(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in item.items() if k != "lastTransitionTime"} for item in items]

    for name, value in patch.items():
        if name == "conditions":
            if strip(value) != strip(current.get("conditions") or []):
                return True
        elif current.get(name) != value:
            return True
    return False
