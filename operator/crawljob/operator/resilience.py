"""Decisions for surviving the control plane's faults: retry delays, liveness, watch messages.

Pure functions and values: the I/O edges (kopf's settings, the run supervisor, the health
endpoint) live in app.py and health.py. See docs/operator.md, "Faults".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class CappedBackoffs:
    """Retry delays first, first*factor, ... capped at *cap*, forever.

    Given to kopf as `settings.networking.error_backoffs`: kopf iterates it afresh for every API
    request and, the iterable being unsized, never runs out of attempts, so a 5xx or an unreachable
    API is retried until it answers instead of escalating (and ending the watcher and the process)
    after kopf's default ~54 s.
    """

    first: float = 1.0
    cap: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first or self.factor < 1:
            raise ValueError(f"invalid backoffs: first={self.first} cap={self.cap} factor={self.factor}")

    def __iter__(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay
            delay = min(delay * self.factor, self.cap)

    def delay(self, failures: int) -> float:
        """The delay after *failures* consecutive failures (1 → first)."""
        if failures < 1:
            return 0.0
        return min(self.first * self.factor ** (failures - 1), self.cap)


@dataclass(frozen=True)
class Liveness:
    """The verdict of `/healthz`: healthy while the API was reached within *limit* seconds."""

    healthy: bool
    age: float
    limit: float


def liveness(now: float, progress_at: float, limit: float) -> Liveness:
    """Healthy unless the last progress (a resync, a peering read) is older than *limit* seconds.

    *limit* (`--liveness-seconds`) is meant to be well past a control-plane outage the operator
    rides out by itself (an upgrade, an etcd failover): restarting the process does not bring the
    API back. Progress is retried every few seconds after a failure, so the verdict turns healthy
    again within seconds of the API's return.
    """
    age = max(0.0, now - progress_at)
    return Liveness(healthy=age < limit, age=age, limit=limit)


# kopf's (DEBUG) lines about a watch stream starting over, with why.
_WATCH_MESSAGES = (
    (re.compile(r"^Watch-stream for (?P<resource>\S+) .*is inactive, reconnecting"), "inactive"),
    (re.compile(r"^Restarting the watch-stream for (?P<resource>\S+)"), "expired"),
    (re.compile(r"^Starting the watch-stream for (?P<resource>\S+)"), "started"),
)


@dataclass(frozen=True)
class WatchRestart:
    """A watch stream kopf (re)opens: its resource and why (inactive, expired, started)."""

    resource: str
    reason: str


def watch_restart(message: str) -> WatchRestart | None:
    """Parse one of kopf's watch-stream messages; None for any other message."""
    for pattern, reason in _WATCH_MESSAGES:
        match = pattern.match(message)
        if match:
            return WatchRestart(resource=match["resource"], reason=reason)
    return None
