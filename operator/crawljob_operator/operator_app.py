"""`crawljob operator`: settings, kopf setup (login, startup, cleanup), health and metrics endpoint.

One active replica: run it as a Deployment with `replicas: 1` and `strategy: Recreate` (see
docs/operator.md for why not kopf peering). kopf runs standalone: no peering objects needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from crawljob_operator import config, handlers, kube
from crawljob_operator.config import OperatorSettings

log = logging.getLogger("crawljob.operator")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, carrying the CrawlJob name when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("crawljob", "namespace", "phase"):
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # kopf logs every handler call at INFO; keep its warnings and errors only.
    logging.getLogger("kopf").setLevel(logging.WARNING)


def build_registry(settings: OperatorSettings, connection: kube.Connection) -> kopf.OperatorRegistry:
    """A kopf registry with the resource handlers and this operator's login/startup/cleanup."""
    registry = kopf.OperatorRegistry()
    handlers.register(registry)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=connection.server,
            ca_path=connection.ca_file,
            insecure=connection.insecure,
            token=connection.token,
            certificate_path=connection.client_cert_file,
            private_key_path=connection.client_key_file,
            default_namespace=connection.default_namespace,
        )

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        tune_kopf(settings, own)
        client = kube.KubeClient(connection, timeout=10.0)
        await client.open()
        state = handlers.State(settings=own, client=client)
        memo["crawljob"] = state
        # Prime the view before any handler runs, so that the cap counts every existing Job and a
        # missing Job is never mistaken for a deleted one after a restart.
        try:
            await handlers.resync(state)
        except kube.KubeError as exc:
            await client.close()
            raise kopf.TemporaryError(f"cannot read CrawlJobs/Jobs at startup: {exc}", delay=3) from exc
        state.spawn(handlers.scheduler_loop(state))
        state.spawn(handlers.resync_loop(state))
        if own.health_port:
            runner = await start_health_server(state, own)
            memo["health_runner"] = runner
        log.info("operator started: namespace=%s max_active=%d", own.namespace or "<all>", own.max_active)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        state: handlers.State | None = memo.get("crawljob")
        runner: web.AppRunner | None = memo.get("health_runner")
        if runner is not None:
            await runner.cleanup()
        if state is not None:
            for task in list(state.tasks):
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            await state.client.close()

    own = settings
    return registry


def tune_kopf(settings: kopf.OperatorSettings, own: OperatorSettings) -> None:
    """kopf settings chosen on purpose (see docs/operator.md)."""
    # A silent watch (e.g. behind a load balancer) is re-established instead of hanging (kopf#698).
    settings.watching.server_timeout = own.watch_server_timeout
    settings.watching.client_timeout = own.watch_server_timeout + 60
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 30
    # We post our own Events on every transition; kopf's own posting only for its warnings.
    settings.posting.level = logging.WARNING
    # No change handlers: nothing is persisted by kopf on the CrawlJobs (no annotations, no status.kopf).
    settings.scanning.disabled = True


async def start_health_server(state: handlers.State, settings: OperatorSettings) -> web.AppRunner:
    """`/healthz` (the API was reached by the last resync) and `/metrics` on settings.health_port."""

    async def healthz(_: web.Request) -> web.Response:
        age = asyncio.get_running_loop().time() - state.healthy_at
        healthy = age < max(3 * settings.resync_seconds, 60)
        body = {"status": "ok" if healthy else "stale", "lastResyncSecondsAgo": round(age, 1)}
        return web.json_response(body, status=200 if healthy else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(state.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.health_host, settings.health_port).start()
    return runner


async def run_operator(
    settings: OperatorSettings, connection: kube.Connection, stop_flag: Any = None
) -> None:
    """Run the operator until stopped (by a signal or *stop_flag*)."""
    registry = build_registry(settings, connection)
    await kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=settings.namespace is None,
        namespaces=[settings.namespace] if settings.namespace else [],
        stop_flag=stop_flag,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`crawljob operator`: parse flags/env, connect, reconcile until interrupted."""
    environ = config.environment()
    parser = config.operator_parser(environ)
    args = config.parse(parser, argv)
    try:
        settings = config.operator_settings(args)
        connection = kube.discover_connection(settings.kube_server, settings.kubeconfig, environ)
    except (ValueError, OSError) as exc:
        print(f"crawljob operator: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    asyncio.run(run_operator(settings, connection))
    return 0
