"""`crawljob operator`: settings, kopf setup (login, startup, cleanup), health and metrics endpoint.

One active replica. By default kopf runs standalone: one replica, a Deployment with
`strategy: Recreate`. With `--peering NAME` replicas of distinct `--priority` share a KopfPeering
object: the highest live one acts, the others stand by (kopf pauses their handlers, `standby.Gate`
their background loops) and take over when it stops or its keep-alive expires. See docs/operator.md.

Faults of the control plane (docs/operator.md, "Faults"): kopf retries every failed API call with
capped backoffs for as long as it takes (its default gives up after ~54 s and the process exits),
and `run_operator` supervises kopf's run: a run that still fails (e.g. a watch stream's error) is
logged and restarted in-process, with the health endpoint answering throughout.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import kopf
from prometheus_client import Gauge

from crawljob import flags, kube
from crawljob.logs import configure_logging
from crawljob.operator import handlers, health, resilience, standby, view
from crawljob.operator.settings import OperatorSettings, operator_parser, operator_settings

log = logging.getLogger("crawljob.operator")


# kopf's API retries: 1, 2, 4, 8 s, then every KOPF_RETRY_CAP_SECONDS, without end.
KOPF_RETRY_CAP_SECONDS = 10.0
# A failed kopf run is restarted after 1, 2, 4 s… at most this; a run that lasted RUN_STABLE_SECONDS
# resets the backoff.
RUN_RETRY_CAP_SECONDS = 30.0
RUN_STABLE_SECONDS = 60.0
RUN_BACKOFFS = resilience.CappedBackoffs(first=1.0, cap=RUN_RETRY_CAP_SECONDS)


def build_registry(
    settings: OperatorSettings, connection: kube.Connection, probe: health.Health | None = None
) -> kopf.OperatorRegistry:
    """A kopf registry with the resource handlers and this operator's login/startup/cleanup."""
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    if probe is not None:
        health.register_watch_clock(registry, probe)

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
        if probe is not None:
            probe.attach(state, gate)
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
    # A stream that delivers nothing, not even a bookmark, is reopened: a frozen connection (a stuck
    # load balancer) is noticed within this period (kopf >= 1.45; logged at INFO by health.py).
    settings.watching.inactivity_timeout = own.watch_inactivity_seconds
    settings.networking.request_timeout = 30
    # API errors (5xx, 429, unreachable) are retried forever, every 10 s at most: kopf's default
    # (1…21 s, ~54 s in all) raises afterwards, which ends the watcher and the process.
    settings.networking.error_backoffs = resilience.CappedBackoffs(first=1.0, cap=KOPF_RETRY_CAP_SECONDS)
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


async def run_operator(
    settings: OperatorSettings, connection: kube.Connection, stop_flag: Any = None
) -> None:
    """Run the operator until stopped (by a signal or *stop_flag*), restarting a failed kopf run."""
    probe = health.Health(settings)
    watch_log = health.install_watch_log(probe)
    runner = await health.start_server(probe, lambda: _run_metrics(probe)) if settings.health_port else None
    try:
        await supervise(lambda: _kopf_run(settings, connection, probe, stop_flag), probe)
    finally:
        if runner is not None:
            await runner.cleanup()
        health.remove_watch_log(watch_log)


def _run_metrics(probe: health.Health) -> Any:
    return probe.state.metrics.registry if probe.state is not None else None


async def _kopf_run(
    settings: OperatorSettings, connection: kube.Connection, probe: health.Health, stop_flag: Any
) -> None:
    await kopf.operator(
        registry=build_registry(settings, connection, probe),
        standalone=settings.peering is None,
        peering_name=settings.peering,
        priority=settings.priority,
        identity=settings.peering_identity,  # type: ignore[arg-type]
        clusterwide=settings.namespace is None,
        namespaces=[settings.namespace] if settings.namespace else [],
        stop_flag=stop_flag,
    )


async def supervise(
    run: Callable[[], Awaitable[None]],
    probe: health.Health,
    backoffs: resilience.CappedBackoffs = RUN_BACKOFFS,
) -> None:
    """Await *run()* until it returns (a requested stop); restart it, with capped backoffs, when it fails."""
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            await run()
            return
        except Exception as exc:
            failures = 1 if loop.time() - started >= RUN_STABLE_SECONDS else failures + 1
            delay = backoffs.delay(failures)
            probe.run_restarts.inc()
            log.error("the kopf run failed (%r); restarting it in %.0fs", exc, delay, exc_info=exc)
            await asyncio.sleep(delay)


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
