"""Timestamps as the Kubernetes API writes them (RFC 3339, UTC): parse and format (pure)."""

from __future__ import annotations

import datetime
from typing import Any


def parse_time(value: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp as an aware datetime, or None (absent or unreadable)."""
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def format_time(moment: datetime.datetime) -> str:
    """*moment* as the API's second-resolution UTC timestamp (`2026-01-01T00:00:00Z`)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> str:
    """The current time as the API's second-resolution UTC timestamp."""
    return format_time(datetime.datetime.now(tz=datetime.UTC))
