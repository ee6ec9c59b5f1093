"""The concurrency cap: which waiting CrawlJobs may start now, first come first served (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from crawljob.models import CrawlJob

# Queue positions: exact near the head, refreshed less often behind it (see position_due).
POSITION_EXACT_HEAD = 10
POSITION_HEAD_SECONDS = 2.0
POSITION_REFRESH_SECONDS = 30.0
# Rewrites of a changed position (not the first Queued write) share this budget, head of the queue
# first: when the queue moves fast every waiting CrawlJob would otherwise get a write as it nears
# the head, only to be admitted a moment later.
POSITION_WRITES_PER_SECOND = 5.0
POSITION_WRITES_BURST = 10.0


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


@dataclass
class Budget:
    """A token bucket: at most *rate* actions a second on average, *burst* at once (time passed in)."""

    rate: float
    burst: float
    tokens: float = 0.0
    at: float | None = None

    def take(self, now: float) -> bool:
        """Spend one token if there is one at *now* (a monotonic clock, seconds)."""
        if self.at is None:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def position_due(position: int, last_written: float, now: float) -> bool:
    """Whether a changed queue position is worth a status write at *now* (a monotonic clock).

    Each admission moves every waiting CrawlJob up one place; writing them all every time costs
    O(queue length) writes per admission. A position is rewritten at most every
    POSITION_HEAD_SECONDS near the head of the queue and every POSITION_REFRESH_SECONDS behind it
    (and all rewrites together at most POSITION_WRITES_PER_SECOND, by a Budget).
    """
    interval = POSITION_HEAD_SECONDS if position <= POSITION_EXACT_HEAD else POSITION_REFRESH_SECONDS
    return now - last_written >= interval


# ---- newer events of the same object (S3 sequencers) ----


def sequencer_order(sequencer: str, width: int) -> str:
    """*sequencer* left-padded with zeros to *width* (upper-cased hex), comparable as a string.

    S3 sequencers of one key grow with time but not in length: "FF" is older than "0100", so both
    are padded to the same width before comparing (AWS's documented rule).
    """
    return sequencer.strip().upper().rjust(width, "0")


def compare_sequencers(left: str, right: str) -> int:
    """-1, 0 or 1 as *left* is older than, the same as, or newer than *right* (same key)."""
    width = max(len(left.strip()), len(right.strip()))
    a, b = sequencer_order(left, width), sequencer_order(right, width)
    return (a > b) - (a < b)


@dataclass(frozen=True)
class Sequenced:
    """A CrawlJob as supersession sees it: which object (namespace, bucket, key), which event."""

    name: str
    obj: tuple[str, str, str]
    sequencer: str
    waiting: bool  # it has not started (no Job yet): it may still be superseded


def newest_events(items: Iterable[Sequenced]) -> dict[tuple[str, str, str], Sequenced]:
    """For each object, the CrawlJob of its newest event (the greatest sequencer; first one on ties)."""
    newest: dict[tuple[str, str, str], Sequenced] = {}
    for item in items:
        if not item.sequencer.strip():
            continue
        best = newest.get(item.obj)
        if best is None or compare_sequencers(item.sequencer, best.sequencer) > 0:
            newest[item.obj] = item
    return newest


def superseded(items: Iterable[Sequenced]) -> dict[str, str]:
    """Waiting CrawlJobs that a newer event of the same object makes pointless → the newest one.

    Only CrawlJobs with a sequencer take part; a CrawlJob that has started (or ended) is never
    superseded here, but it does supersede older waiting ones.
    """
    entries = [item for item in items if item.sequencer.strip()]
    newest = newest_events(entries)
    return {
        item.name: newest[item.obj].name
        for item in entries
        if item.waiting and compare_sequencers(newest[item.obj].sequencer, item.sequencer) > 0
    }


def sequenced_of(crawljob: CrawlJob, waiting: bool) -> Sequenced:
    """A CrawlJob as supersession sees it."""
    namespace, name = crawljob.key
    source = crawljob.source
    return Sequenced(f"{namespace}/{name}", (namespace, source.bucket, source.key), source.sequencer, waiting)
