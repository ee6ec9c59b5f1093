"""Active/standby: run the operator's background loops only while this replica is the active one.

kopf pauses its watch streams (hence our handlers) while a peer with a higher or equal priority is
alive. The loops started by the operator itself (queue admission, Job creation, periodic resync and
GC, CloudEvent delivery, CrawlSource sweeps) are invisible to kopf, so `Gate` watches the same KopfPeering object and applies kopf's rule
(`peering.verdict`) on each change: it starts the loops when this replica becomes active and
cancels them when it stands by. Standalone operators are active from the start (`activate` at startup).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from typing import Any

from crawljob import kube
from crawljob.operator import admission, notify, peering, resync, sqs, sweeper, view
from crawljob.operator.settings import OperatorSettings
from crawljob.operator.supervise import Supervisor

log = logging.getLogger("crawljob.operator")


def check_interval(lifetime: int) -> float:
    """How often the gate re-reads the peering object: a sixth of the lifetime, within 0.5-5 s."""
    return min(5.0, max(0.5, lifetime / 6))


def forget_view(state: view.State) -> None:
    """Drop what this replica saw of CrawlJobs, Jobs and Pods.

    A standby receives no events, so its view goes stale while another replica acts. Were it kept,
    the handlers that kopf resumes on a later takeover would reconcile fresh Job events against
    stale CrawlJobs and rewrite finished statuses. Forgotten, the view is refilled from fresh
    events and the activation's resync; a CrawlJob not (yet) in it is left alone.
    """
    for store in (state.crawljobs, state.jobs, state.pods, state.pods_by_job, state.position_written):
        store.clear()


class Gate:
    """Starts the operator's loops on becoming active; stops them when a peer takes over."""

    def __init__(self, state: view.State, settings: OperatorSettings) -> None:
        self.state = state
        self.settings = settings
        self.active = False
        # The loops run supervised: one that ends on its own makes /healthz fail (supervise.py).
        self.supervisor = Supervisor()
        # Kept across activations: a source whose status write failed stays held (sweeper.py).
        self.sweeper = sweeper.Sweeper(state)
        # Loop time of the last successful read of the peering object (health of a standby).
        self.checked_at = 0.0
        self.reason = "starting"
        # Since when our keep-alive is in the peering object (wall clock, as kopf writes it).
        self._visible_since: datetime.datetime | None = None

    async def activate(self) -> None:
        """Prime the view from the API (resync), then start the loops. Raises kube.KubeError."""
        await admission.detect_job_features(self.state)
        await resync.resync(self.state)
        for loop in (
            admission.scheduler_loop,
            admission.creator_loop,
            resync.resync_loop,
            notify.notify_loop,
        ):
            self.supervisor.start(loop.__name__, loop(self.state))
        self.supervisor.start("sweep_loop", self.sweeper.run())
        self.supervisor.start("sqs_loop", sqs.Poller(self.state).run())
        self.active = True

    async def deactivate(self) -> None:
        """Stop the loops, forget admissions not yet turned into Jobs (the next active re-admits)
        and forget the view (see forget_view)."""
        self.active = False
        await self.supervisor.stop()
        while not self.state.admitted.empty():
            self.state.creating.discard(self.state.admitted.get_nowait())
        forget_view(self.state)

    async def read(self) -> dict[str, Any] | None:
        """The peering object; created (with our keep-alive) when missing, so that a fresh install works.

        A KopfPeering in the watched namespace, or a ClusterKopfPeering when watching all of them
        (where kopf looks for it).
        """
        client, namespace, name = self.state.client, self.settings.namespace, str(self.settings.peering)
        try:
            if namespace is None:
                return await client.get(kube.CLUSTER_PEERINGS, "", name)
            return await client.get(kube.PEERINGS, namespace, name)
        except kube.NotFound:
            pass
        # With our keep-alive in it: kopf's next one may be most of a lifetime away (its first one
        # found no object), and a replica acts only while it is in the object.
        settings = self.settings
        entry = peering.keepalive(
            settings.priority, settings.peering_lifetime, datetime.datetime.now(tz=datetime.UTC)
        )
        manifest = peering.peering_manifest(name, namespace, {settings.peering_identity: entry})
        try:
            if namespace is None:
                created = await client.create(kube.CLUSTER_PEERINGS, "", manifest)
            else:
                created = await client.create(kube.PEERINGS, namespace, manifest)
        except kube.Conflict:
            return None  # another replica created it just now: read it on the next check
        log.info("peering: created %s %s", manifest["kind"], name)
        return created

    async def check(self, now: datetime.datetime, loop_time: float) -> peering.Verdict:
        """Read the peering object once and start or stop the loops accordingly."""
        settings = self.settings
        try:
            found = await self.read()
        except kube.NotFound as exc:
            found = None
            self.reason = f"no {peering.PLURAL} resource in the API (install the KopfPeering CRD): {exc}"
        self.checked_at = loop_time
        decision = peering.verdict(found, settings.peering_identity, settings.priority, now)
        if found is not None:
            self.reason = decision.reason
        if decision.own_lastseen is None:
            self._visible_since = None
        elif self._visible_since is None:
            self._visible_since = decision.own_lastseen
        # Taking over from a live lower-priority replica (it may be acting): wait until our own
        # keep-alive has been in the object for one check interval, so that it has seen us and
        # stopped. Nobody lower alive (a failover, or alone): act at once.
        settled = not decision.lower or (
            self._visible_since is not None
            and (now - self._visible_since).total_seconds() >= check_interval(settings.peering_lifetime)
        )
        if decision.active and not self.active and settled:
            log.info(
                "peering %s: this replica (%s, priority %d) is now active: %s",
                settings.peering,
                settings.peering_identity,
                settings.priority,
                decision.reason,
            )
            await self.activate()
        elif not decision.active and self.active:
            log.info(
                "peering %s: this replica (%s, priority %d) stands by: %s",
                settings.peering,
                settings.peering_identity,
                settings.priority,
                decision.reason,
            )
            await self.deactivate()
        return decision

    async def run(self) -> None:
        """Check the peering object on every change of it (a watch), at least every check_interval,
        and when a blocking peer's keep-alive expires."""
        interval = check_interval(self.settings.peering_lifetime)
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        watcher = asyncio.create_task(self.watch(changed))
        logged = ""
        try:
            while True:
                changed.clear()  # before the read: a change during it triggers the next check
                now = datetime.datetime.now(tz=datetime.UTC)
                delay = interval
                try:
                    decision = await self.check(now, loop.time())
                    if decision.recheck_at is not None:
                        delay = min(delay, max(0.05, (decision.recheck_at - now).total_seconds()))
                    if decision.active and not self.active:
                        delay = min(delay, 0.5)  # settling: activate once the interval has passed
                except kube.KubeError as exc:
                    log.warning(
                        "peering %s: cannot read the peering object (will retry): %s",
                        self.settings.peering,
                        exc,
                    )
                if not self.active and self.reason != logged:
                    log.info("peering %s: %s", self.settings.peering, self.reason)
                    logged = self.reason
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), delay)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def watch(self, changed: asyncio.Event) -> None:
        """Set *changed* on every watch event of the peering object (kopf reacts to the same)."""
        client, namespace, name = self.state.client, self.settings.namespace, str(self.settings.peering)
        timeout = self.settings.watch_server_timeout
        while True:
            try:
                if namespace is None:
                    stream = client.watch(kube.CLUSTER_PEERINGS, None, timeout_seconds=timeout)
                else:
                    stream = client.watch(kube.PEERINGS, namespace, timeout_seconds=timeout)
                async for event in stream:
                    if ((event.get("object") or {}).get("metadata") or {}).get("name") == name:
                        changed.set()
            except kube.KubeError as exc:
                log.debug("peering %s: watch interrupted (re-established): %s", name, exc)
            await asyncio.sleep(1.0)  # a closed or failed stream: the periodic check covers the gap

    async def close(self) -> None:
        await self.deactivate()
