"""Which finished CrawlJobs to delete: past a TTL, or beyond per-outcome history limits (pure)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from crawljob.models import CrawlJob
from crawljob.times import parse_time


def select_for_deletion(
    crawljobs: Iterable[CrawlJob],
    now: datetime.datetime,
    ttl_seconds: int | None,
    successful_limit: int | None,
    failed_limit: int | None,
) -> list[str]:
    """Names of finished CrawlJobs to delete; unfinished ones are never selected.

    Like CronJob's history limits: per outcome (Succeeded; Failed, Cancelled and Superseded together),
    the newest by completionTime are kept.
    """
    doomed: set[str] = set()
    by_outcome: dict[str, list[tuple[datetime.datetime, str]]] = {"Succeeded": [], "Failed": []}
    for crawljob in crawljobs:
        phase = crawljob.status.phase
        if not crawljob.status.terminal:
            continue
        name = crawljob.meta.name
        finished = parse_time(crawljob.status.completion_time) or parse_time(crawljob.meta.creation_timestamp)
        if finished is None:
            continue
        if ttl_seconds is not None and (now - finished).total_seconds() >= ttl_seconds:
            doomed.add(name)
        by_outcome["Succeeded" if phase == "Succeeded" else "Failed"].append((finished, name))
    for outcome, limit in (("Succeeded", successful_limit), ("Failed", failed_limit)):
        if limit is None:
            continue
        newest_first = sorted(by_outcome[outcome], reverse=True)
        doomed.update(name for _, name in newest_first[limit:])
    return sorted(doomed)
