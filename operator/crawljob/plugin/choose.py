"""Pure decisions of the kubectl plugin: parsing its arguments, choosing what to re-run."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any

from crawljob import resource

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(ValueError):
    """A bad argument: the message says which and what is expected."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`; the key is taken literally (`#` and `?` are data)."""
    if not uri.startswith("s3://"):
        raise UsageError(f"expected s3://bucket/key, got {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise UsageError(f"no bucket in {uri!r}: expected s3://bucket/key")
    if not key.strip() or key.endswith("/"):
        raise UsageError(f"no object key in {uri!r}: expected s3://bucket/key (a key, not a prefix)")
    return bucket, key


def parse_duration(text: str) -> datetime.timedelta:
    """`90s`, `30m`, `1h`, `2d` as a timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"--since takes a duration such as 30m, 1h or 2d, got {text!r}")
    return datetime.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _time(value: Any) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def failed_since(
    crawljobs: Iterable[Mapping[str, Any]], now: datetime.datetime, since: datetime.timedelta | None
) -> list[str]:
    """Names of the Failed CrawlJobs that finished within *since* of *now* (all of them without
    *since*), oldest first."""
    chosen: list[tuple[str, str]] = []
    for crawljob in crawljobs:
        status = crawljob.get("status") or {}
        if status.get("phase") != "Failed":
            continue
        finished = _time(
            status.get("completionTime") or (crawljob.get("metadata") or {}).get("creationTimestamp")
        )
        if since is not None and (finished is None or finished < now - since):
            continue
        chosen.append((str(status.get("completionTime") or ""), str(crawljob["metadata"]["name"])))
    return [name for _, name in sorted(chosen)]


def failed_selector(selector: str | None) -> str:
    """The label selector of Failed CrawlJobs, narrowed by the user's `-l`."""
    own = f"{resource.LABEL_PHASE}=Failed"
    return f"{own},{selector}" if selector else own


def same_object(existing: Mapping[str, Any], ref: resource.ObjectRef) -> bool:
    """Whether a CrawlJob found under *ref*'s name is for the same object version (a duplicate)."""
    source = (existing.get("spec") or {}).get("source") or {}
    other = resource.ObjectRef(
        bucket=str(source.get("bucket") or ""),
        key=str(source.get("key") or ""),
        version_id=source.get("versionId"),
        etag=source.get("eTag"),
        sequencer=source.get("sequencer"),
    )
    return (other.bucket, other.key, other.identity()) == (ref.bucket, ref.key, ref.identity())


def latest_pod(pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recently created pod (the last attempt)."""
    ordered = sorted(
        pods,
        key=lambda pod: (
            str((pod.get("metadata") or {}).get("creationTimestamp") or ""),
            str((pod.get("metadata") or {}).get("name") or ""),
        ),
    )
    return ordered[-1] if ordered else None
