"""The concurrency cap: which waiting CrawlJobs may start now, first come first served (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """A CrawlJob as the queue sees it."""

    name: str
    creation_timestamp: str
    active: bool  # it has an unfinished Job (or one is being created): it holds a slot
    waiting: bool  # it needs a Job and has none yet

    @property
    def order(self) -> tuple[str, str]:
        return (self.creation_timestamp, self.name)


@dataclass(frozen=True)
class Plan:
    """Who starts now and where the others stand."""

    admit: tuple[str, ...]
    positions: Mapping[str, int]  # 1-based queue positions of those still waiting
    active: int


def plan(candidates: Iterable[Candidate], max_active: int) -> Plan:
    """Admit the oldest waiting CrawlJobs into the free slots; number the rest in order.

    Order is creationTimestamp, then name (timestamps have one-second resolution).
    """
    items = list(candidates)
    active = sum(1 for item in items if item.active)
    free = max(0, max_active - active)
    waiting = sorted(
        (item for item in items if item.waiting and not item.active), key=lambda item: item.order
    )
    admit = tuple(item.name for item in waiting[:free])
    positions = {item.name: index + 1 for index, item in enumerate(waiting[free:])}
    return Plan(admit=admit, positions=positions, active=active + len(admit))


def candidate_from(crawljob: Mapping[str, Any], active: bool, waiting: bool) -> Candidate:
    """A Candidate from a CrawlJob body."""
    metadata = crawljob.get("metadata") or {}
    return Candidate(
        name=str(metadata.get("name")),
        creation_timestamp=str(metadata.get("creationTimestamp") or ""),
        active=active,
        waiting=waiting,
    )
