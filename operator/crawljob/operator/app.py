"""`crawljob operator`: settings, kopf setup (login, startup, cleanup), health and metrics endpoint.

One active replica. By default kopf runs standalone: one replica, a Deployment with
`strategy: Recreate`. With `--peering NAME` replicas of distinct `--priority` share a KopfPeering
object: the highest live one acts, the others stand by (kopf pauses their handlers, `standby.Gate`
their background loops) and take over when it stops or its keep-alive expires. See docs/operator.md.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from crawljob import flags, kube
from crawljob.logs import configure_logging
from crawljob.operator import handlers, standby, view
from crawljob.operator.settings import OperatorSettings, operator_parser, operator_settings

log = logging.getLogger("crawljob.operator")


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
            token=connection.bearer(),  # kopf logs in again on a 401: a renewed exec/OIDC token
            certificate_path=connection.client_cert_file,
            private_key_path=connection.client_key_file,
            default_namespace=connection.default_namespace,
        )

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        tune_kopf(settings, own)
        client = kube.KubeClient(connection, timeout=10.0, user_agent=user_agent(own))
        await client.open()
        state = view.State(settings=own, client=client)
        gate = standby.Gate(state, own)
        memo["crawljob"] = state
        memo["gate"] = gate
        active = Gauge(
            "crawljob_replica_active",
            "1 while this replica is the active one (always 1 when standalone), 0 while standing by",
            registry=state.metrics.registry,
        )
        active.set_function(lambda: float(gate.active))
        if own.peering is None:
            # Prime the view before any handler runs, so that the cap counts every existing Job and
            # a missing Job is never mistaken for a deleted one after a restart.
            try:
                await gate.activate()
            except kube.KubeError as exc:
                await client.close()
                raise kopf.TemporaryError(f"cannot read CrawlJobs/Jobs at startup: {exc}", delay=3) from exc
        else:
            state.spawn(gate.run())
        if own.health_port:
            runner = await start_health_server(state, gate, own)
            memo["health_runner"] = runner
        log.info(
            "operator started: namespace=%s max_active=%d peering=%s identity=%s priority=%d",
            own.namespace or "<all>",
            own.max_active,
            own.peering or "<standalone>",
            own.peering_identity,
            own.priority,
        )

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        state: view.State | None = memo.get("crawljob")
        gate: standby.Gate | None = memo.get("gate")
        runner: web.AppRunner | None = memo.get("health_runner")
        if runner is not None:
            await runner.cleanup()
        if state is not None:
            for task in list(state.tasks):
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            if gate is not None:
                await gate.close()
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
    # Peering (when enabled): a crashed active replica is taken over after this many seconds.
    settings.peering.lifetime = own.peering_lifetime
    settings.peering.stealth = True


def user_agent(settings: OperatorSettings) -> str:
    """Names the replica in API audit logs (and in the emulator's request log, for the tests)."""
    return f"crawljob-operator ({settings.peering_identity})"


async def start_health_server(
    state: view.State, gate: standby.Gate, settings: OperatorSettings
) -> web.AppRunner:
    """`/healthz` and `/metrics` on settings.health_port.

    Healthy while the API was reached recently: by the last resync when active, by the last read of
    the peering object when standing by (a standby does not resync).
    """

    async def healthz(_: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        limit = max(3 * settings.resync_seconds, 60)
        if gate.active:
            age = now - state.healthy_at
            body: dict[str, Any] = {"role": "active", "lastResyncSecondsAgo": round(age, 1)}
        else:
            age = now - gate.checked_at
            body = {"role": "standby", "lastPeeringCheckSecondsAgo": round(age, 1), "reason": gate.reason}
        healthy = age < limit
        body = {"status": "ok" if healthy else "stale", **body}
        if gate.supervisor.dead is not None:
            # A background loop died: nothing would create Jobs any more. Let Kubernetes restart us.
            healthy = False
            body |= {"status": "dead", "loop": gate.supervisor.dead}
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
        standalone=settings.peering is None,
        peering_name=settings.peering,
        priority=settings.priority,
        identity=settings.peering_identity,  # type: ignore[arg-type]
        clusterwide=settings.namespace is None,
        namespaces=[settings.namespace] if settings.namespace else [],
        stop_flag=stop_flag,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`crawljob operator`: parse flags/env, connect, reconcile until interrupted."""
    environ = flags.environment()
    parser = operator_parser(environ)
    args = flags.parse(parser, argv)
    try:
        settings = operator_settings(args)
        connection = kube.discover_connection(settings.kube_server, settings.kubeconfig, environ)
    except (ValueError, OSError) as exc:
        print(f"crawljob operator: {exc}", file=sys.stderr)
        return 2
    # kopf logs every handler call at INFO; keep its warnings and errors only.
    configure_logging(settings.log_format, quiet=("kopf",))
    asyncio.run(run_operator(settings, connection))
    return 0
