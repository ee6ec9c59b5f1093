"""CrawlSource: constants, the validated model of one source, key matching and routing (pure: no I/O).

Shared by the operator (sweeps) and the receiver (routing webhook events to a source's template).
"""

from __future__ import annotations

import copy
import datetime
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crawljob import resource
from crawljob.times import parse_time

KIND = "CrawlSource"
PLURAL = "crawlsources"
SHORT_NAME = "csrc"  # "cs" is componentstatuses' built-in short name
# Every CrawlJob made for a source (by a sweep or a routed webhook event) carries the source's name.
LABEL_SOURCE = "crawljob.io/source"
# Any new value asks for a sweep now (like Flux's reconcile.fluxcd.io/requestedAt).
ANNOTATION_SWEEP = "crawljob.io/sweep"
DEFAULT_INTERVAL = "10m"
MIN_INTERVAL_SECONDS = 1.0
# The CrawlJob spec fields a template may set (all but source): the CRD mirrors the CrawlJob's.
TEMPLATE_FIELDS = (
    "output",
    "csv",
    "maxRejectRatio",
    "shards",
    "shardSizeMb",
    "backoffLimit",
    "activeDeadlineSeconds",
    "notify",
    "jobTemplate",
)

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class InvalidSource(ValueError):
    """A CrawlSource spec the operator cannot use; *field* names the offending spec field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"spec.{field}: {message}")
        self.field = field


def parse_duration(text: str) -> float:
    """A Go-style duration ("10m", "1h30m", "1.5s", "250ms", "0") in seconds; ValueError otherwise."""
    value = text.strip()
    if value == "0":
        return 0.0
    if not _DURATION.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m or 1h30m")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(value))


@dataclass(frozen=True)
class Source:
    """One CrawlSource, validated."""

    namespace: str
    name: str
    bucket: str
    prefix: str = ""
    suffixes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    since: datetime.datetime | None = None
    interval_seconds: float = 600.0
    suspend: bool = False
    template: Mapping[str, Any] = field(default_factory=dict)
    generation: int | None = None
    # spec.sqs.queueUrl: the operator long-polls this queue for S3 events (operator/sqs.py).
    queue_url: str | None = None

    @property
    def sweeps(self) -> bool:
        """Whether the operator sweeps this source periodically (interval not 0, not suspended)."""
        return self.interval_seconds > 0 and not self.suspend

    def matches_key(self, key: str) -> bool:
        """Whether *key* belongs to the feed: under the prefix, a wanted suffix, not excluded.

        Folder placeholders (keys ending in "/") never match.
        """
        if not key or key.endswith("/") or not key.startswith(self.prefix):
            return False
        if self.suffixes and not key.endswith(self.suffixes):
            return False
        return not any(fnmatch.fnmatchcase(key, pattern) for pattern in self.exclude)

    def matches(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and self.matches_key(key)


def source_from_body(body: Mapping[str, Any]) -> Source:
    """The validated Source of a CrawlSource object; InvalidSource naming the field otherwise.

    The CRD schema already refuses most bad values (422); this also covers objects written
    where no schema applies (the emulator) and checks what a schema cannot (the duration's size).
    """
    metadata = body.get("metadata") or {}
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidSource("", "a CrawlSource needs a spec")
    bucket = spec.get("bucket")
    if not isinstance(bucket, str) or not bucket:
        raise InvalidSource("bucket", "the bucket name is required")
    prefix = spec.get("prefix") or ""
    if not isinstance(prefix, str):
        raise InvalidSource("prefix", "must be a string")
    suffixes = _strings(spec.get("suffixes"), "suffixes")
    exclude = _strings(spec.get("exclude"), "exclude")
    since = None
    if spec.get("since") is not None:
        since = parse_time(spec.get("since"))
        if since is None:
            raise InvalidSource("since", f"{spec.get('since')!r} is not an RFC 3339 time")
    interval_text = spec.get("interval")
    interval_text = DEFAULT_INTERVAL if interval_text is None else str(interval_text)
    try:
        interval = parse_duration(interval_text)
    except ValueError as exc:
        raise InvalidSource("interval", str(exc)) from exc
    if 0 < interval < MIN_INTERVAL_SECONDS:
        raise InvalidSource("interval", f"must be 0 (no sweep) or at least {MIN_INTERVAL_SECONDS:g}s")
    template = spec.get("template") or {}
    if not isinstance(template, Mapping):
        raise InvalidSource("template", "must be an object of CrawlJob spec fields")
    unknown = sorted(set(template) - set(TEMPLATE_FIELDS))
    if unknown:
        raise InvalidSource(
            "template", f"unknown CrawlJob spec fields {unknown} (allowed: {TEMPLATE_FIELDS})"
        )
    generation = metadata.get("generation")
    queue_url = _queue_url(spec.get("sqs"))
    return Source(
        namespace=str(metadata.get("namespace") or "default"),
        name=str(metadata.get("name") or ""),
        bucket=bucket,
        prefix=prefix,
        suffixes=suffixes,
        exclude=exclude,
        since=since,
        interval_seconds=interval,
        suspend=bool(spec.get("suspend", False)),
        template=copy.deepcopy(dict(template)),
        generation=int(generation) if isinstance(generation, int) else None,
        queue_url=queue_url,
    )


def _queue_url(sqs: Any) -> str | None:
    if sqs is None:
        return None
    if not isinstance(sqs, Mapping):
        raise InvalidSource("sqs", "must be an object with a queueUrl")
    url = sqs.get("queueUrl")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise InvalidSource(
            "sqs.queueUrl", f"must be an SQS queue URL (https://sqs.…/account/name), got {url!r}"
        )
    return url


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidSource(name, "must be a list of non-empty strings")
    return tuple(value)


def select_source(sources: Iterable[Source], bucket: str, key: str) -> Source | None:
    """The source an object belongs to: the matching one with the longest prefix.

    Ties (same prefix) go to the first name in alphabetical order, so every replica of the
    receiver and the operator choose the same one.
    """
    matching = [source for source in sources if source.matches(bucket, key)]
    if not matching:
        return None
    return min(matching, key=lambda source: (-len(source.prefix), source.name))


def apply_source(manifest: Mapping[str, Any], source: Source) -> dict[str, Any]:
    """A copy of a CrawlJob manifest with the source's template and label (the source stays the object's)."""
    result = copy.deepcopy(dict(manifest))
    spec = result.setdefault("spec", {})
    for name, value in source.template.items():
        spec[name] = copy.deepcopy(value)
    metadata = result.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), LABEL_SOURCE: source.name}
    return result


def source_of_crawljob(crawljob: Mapping[str, Any]) -> str | None:
    """The name of the source a CrawlJob was made for (its label), if any."""
    labels = (crawljob.get("metadata") or {}).get("labels") or {}
    value = labels.get(LABEL_SOURCE)
    return str(value) if value else None


def crd_path() -> Path:
    """The chart's CrawlSource CRD (next to the CrawlJob's)."""
    return resource.crd_path().with_name("crawlsources.crawljob.io.yaml")
