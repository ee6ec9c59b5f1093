"""Text renderings of CrawlJobs for the local stack (pure)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

COLUMNS = ("NAME", "BUCKET", "KEY", "PHASE", "PROGRESS", "ROWS", "REASON", "AGE")


def _age(created: str | None, now: datetime.datetime) -> str:
    if not created:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def crawljob_row(crawljob: Mapping[str, Any], now: datetime.datetime) -> tuple[str, ...]:
    """The printer columns of one CrawlJob, as `kubectl get crawljobs` shows them."""
    metadata = crawljob.get("metadata") or {}
    source = (crawljob.get("spec") or {}).get("source") or {}
    status = crawljob.get("status") or {}
    rows = (status.get("result") or {}).get("rowsWritten")
    return (
        str(metadata.get("name", "")),
        str(source.get("bucket", "")),
        str(source.get("key", "")),
        str(status.get("phase", "")),
        str((status.get("progress") or {}).get("percent", "")),
        "" if rows is None else str(rows),
        str(status.get("reason", "")),
        _age(metadata.get("creationTimestamp"), now),
    )


def render_table(crawljobs: Iterable[Mapping[str, Any]], now: datetime.datetime | None = None) -> str:
    """A `kubectl get crawljobs`-like table, oldest first."""
    moment = now or datetime.datetime.now(tz=datetime.UTC)
    ordered = sorted(
        crawljobs,
        key=lambda item: (
            (item.get("metadata") or {}).get("creationTimestamp") or "",
            item["metadata"]["name"],
        ),
    )
    rows = [COLUMNS, *(crawljob_row(item, moment) for item in ordered)]
    widths = [max(len(row[index]) for row in rows) for index in range(len(COLUMNS))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def render_result(crawljob: Mapping[str, Any]) -> str:
    """The outcome of one CrawlJob in a few lines."""
    status = crawljob.get("status") or {}
    lines = [f"CrawlJob {crawljob['metadata']['name']}: {status.get('phase', 'unknown')}"]
    if status.get("message"):
        lines.append(f"  message:  {status['message']}")
    result = status.get("result") or {}
    labels = (
        ("rowsRead", "rows read"),
        ("rowsWritten", "rows written"),
        ("rowsRejected", "rows rejected"),
        ("bytesRead", "bytes read"),
        ("durationSeconds", "duration s"),
        ("outputUri", "output"),
        ("manifestUri", "manifest"),
        ("rejectsUri", "rejects"),
    )
    lines += [
        f"  {label + ':':<15}{result[key]}" for key, label in labels if result.get(key) not in (None, "")
    ]
    return "\n".join(lines)
