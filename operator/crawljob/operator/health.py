"""The operator's health and watch telemetry: `/healthz`, `/readyz`, `/metrics`, watch clocks.

It outlives kopf's runs (app.run_operator restarts a failed run in-process): each run's startup
hands its view and gate to `Health.attach`, and the endpoint keeps answering meanwhile.

- `/healthz` (liveness): 200 unless the operator has made no progress (a resync when active, a
  read of the peering object when standing by; counted from the process start before the first
  one) for `--liveness-seconds`. See resilience.liveness.
- `/readyz`: 200 once the view is primed and in sync (progress within 3 x `--resync-seconds`,
  at least 60 s): what the tests and `crawljob local` wait for.
- Watch telemetry: `crawljob_watch_event_age_seconds{resource}` (seconds since the last
  event kopf delivered for each watched resource) and kopf's watch-stream restarts, logged at INFO
  and counted in `crawljob_watch_restarts_total{resource,reason}`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from crawljob import resource
from crawljob.operator import resilience, standby, view
from crawljob.operator.settings import OperatorSettings

log = logging.getLogger("crawljob.operator")

# The resources kopf watches for us (handlers.register): the label of the watch metrics.
WATCHED = ("crawljobs", "jobs", "pods")
KOPF_WATCH_LOGGER = "kopf._cogs.clients.watching"


class Health:
    """What `/healthz` and the watch metrics read; one per process, across kopf runs."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.state: view.State | None = None
        self.gate: standby.Gate | None = None
        self.started_at = asyncio.get_running_loop().time()
        self.last_event: dict[str, float] = dict.fromkeys(WATCHED, self.started_at)
        self.registry = CollectorRegistry()
        age = Gauge(
            "crawljob_watch_event_age_seconds",
            "Seconds since kopf last delivered an event of this resource (or since the start)",
            ["resource"],
            registry=self.registry,
        )
        for plural in self.last_event:
            age.labels(plural).set_function(functools.partial(self.event_age, plural))
        self.watch_restarts = Counter(
            "crawljob_watch_restarts_total",
            "Watch streams kopf (re)opened, by why: started, inactive (no data for "
            "--watch-inactivity-seconds), expired (410 Gone)",
            ["resource", "reason"],
            registry=self.registry,
        )
        self.run_restarts = Counter(
            "crawljob_kopf_run_restarts_total",
            "kopf runs that failed and were restarted in-process",
            registry=self.registry,
        )

    def attach(self, state: view.State, gate: standby.Gate) -> None:
        """A kopf run's view and gate (called by its startup handler)."""
        self.state, self.gate = state, gate

    # time.monotonic() is the clock of asyncio's loop.time(), and works outside the loop (scrapes).
    def note_event(self, plural: str) -> None:
        self.last_event[plural] = time.monotonic()

    def event_age(self, plural: str) -> float:
        return max(0.0, time.monotonic() - self.last_event[plural])

    def progress(self) -> tuple[dict[str, Any], float | None]:
        """The role and details, and the loop time of the last progress (None: not primed yet)."""
        if self.state is None or self.gate is None:
            return {"role": "starting"}, None
        if self.gate.active:
            at = self.state.healthy_at or None
            return {"role": "active", "lastResyncSecondsAgo": self._ago(at)}, at
        at = self.gate.checked_at or None
        return {
            "role": "standby",
            "lastPeeringCheckSecondsAgo": self._ago(at),
            "reason": self.gate.reason,
        }, at

    def _ago(self, at: float | None) -> float | None:
        return None if at is None else round(asyncio.get_running_loop().time() - at, 1)

    def liveness(self) -> tuple[resilience.Liveness, dict[str, Any]]:
        body, at = self.progress()
        now = asyncio.get_running_loop().time()
        verdict = resilience.liveness(
            now, at if at is not None else self.started_at, self.settings.liveness_seconds
        )
        dead = self.gate.supervisor.dead if self.gate is not None else None
        if dead is not None:
            # A background loop died: nothing would create Jobs any more. Let Kubernetes restart us.
            verdict = resilience.Liveness(healthy=False, age=verdict.age, limit=verdict.limit)
            body = {**body, "dead": True, "loop": dead}
        return verdict, body

    def ready(self) -> tuple[bool, dict[str, Any]]:
        body, at = self.progress()
        limit = max(3 * self.settings.resync_seconds, 60)
        now = asyncio.get_running_loop().time()
        return at is not None and now - at < limit, body


class WatchLogFilter(logging.Filter):
    """On kopf's watching logger: its watch-stream restarts at INFO (and counted); other DEBUG dropped.

    kopf logs a watch reopened for inactivity (a frozen connection) or expiry only at DEBUG, while
    the operator keeps kopf at WARNING: such a restart would go unseen. Warnings and errors pass.
    """

    def __init__(self, health: Health) -> None:
        super().__init__()
        self.health = health

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        restart = resilience.watch_restart(record.getMessage())
        if restart is None:
            return False
        record.levelno, record.levelname = logging.INFO, "INFO"
        self.health.watch_restarts.labels(restart.resource, restart.reason).inc()
        return True


def install_watch_log(health: Health) -> WatchLogFilter:
    """Route kopf's watch-stream restarts to the log at INFO (undo with remove_watch_log)."""
    logger = logging.getLogger(KOPF_WATCH_LOGGER)
    watch_filter = WatchLogFilter(health)
    logger.addFilter(watch_filter)
    logger.setLevel(logging.DEBUG)
    return watch_filter


def remove_watch_log(watch_filter: WatchLogFilter) -> None:
    logger = logging.getLogger(KOPF_WATCH_LOGGER)
    logger.removeFilter(watch_filter)
    logger.setLevel(logging.NOTSET)


def register_watch_clock(registry: kopf.OperatorRegistry, health: Health) -> None:
    """An event handler per watched resource that stamps its clock (no label filter: any event).

    Async: kopf runs sync handlers in a thread. The calls name their resources literally (the
    RBAC test reads them from the code)."""

    async def crawljobs(**_: Any) -> None:
        health.note_event("crawljobs")

    async def jobs(**_: Any) -> None:
        health.note_event("jobs")

    async def pods(**_: Any) -> None:
        health.note_event("pods")

    kopf.on.event(resource.GROUP, resource.VERSION, resource.PLURAL, id="clock", registry=registry)(crawljobs)
    kopf.on.event("batch", "v1", "jobs", id="clock", registry=registry)(jobs)
    kopf.on.event("", "v1", "pods", id="clock", registry=registry)(pods)


async def start_server(health: Health, metrics: Any) -> web.AppRunner:
    """`/healthz`, `/readyz` and `/metrics` on settings.health_port; *metrics()* is the run's registry."""
    settings = health.settings

    async def healthz(_: web.Request) -> web.Response:
        verdict, body = health.liveness()
        answer = {
            "status": "dead" if body.pop("dead", False) else "ok" if verdict.healthy else "stale",
            **body,
            "noProgressSeconds": round(verdict.age, 1),
            "livenessSeconds": verdict.limit,
        }
        return web.json_response(answer, status=200 if verdict.healthy else 503)

    async def readyz(_: web.Request) -> web.Response:
        ready, body = health.ready()
        return web.json_response(
            {"status": "ready" if ready else "not ready", **body}, status=200 if ready else 503
        )

    async def metrics_endpoint(_: web.Request) -> web.Response:
        run_registry = metrics()
        text = generate_latest(health.registry)
        if run_registry is not None:
            text = generate_latest(run_registry) + text
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.health_host, settings.health_port).start()
    return runner
