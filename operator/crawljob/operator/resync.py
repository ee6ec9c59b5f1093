"""The periodic resync: re-read everything, reconcile what is unfinished, cancel orphaned Jobs and
garbage-collect finished CrawlJobs (the safety net under the watch events)."""

from __future__ import annotations

import asyncio
import datetime
from collections import defaultdict

from crawljob import kube, resource
from crawljob.models import CrawlJob, Key, Meta, key_of
from crawljob.operator import gc, resilience, sweep
from crawljob.operator.reconcile import reconcile
from crawljob.operator.view import MANAGED, RetryLater, State, log
from crawljob.operator.writes import delete_job

# A failed resync is retried sooner than the period, with backoffs up to this (seconds).
RESYNC_RETRY_CAP_SECONDS = 5.0


async def resync(state: State) -> None:
    """Re-read everything from the API, reconcile every unfinished CrawlJob, and collect garbage."""
    namespace = state.settings.namespace
    crawljobs = await state.client.list(kube.CRAWLJOBS, namespace)
    job_list = await state.client.list(kube.JOBS, namespace, MANAGED)
    pod_list = await state.client.list(kube.PODS, namespace, MANAGED)
    seen = {state.remember_crawljob(item).key for item in crawljobs}
    for key in [key for key in state.crawljobs if key not in seen and key not in state.creating]:
        state.crawljobs.pop(key, None)
    seen = {state.remember_job(item).key for item in job_list}
    for key in [key for key in state.jobs if key not in seen and key not in state.creating]:
        state.jobs.pop(key, None)
    seen_pods = {key_of(item) for item in pod_list}
    for pod in pod_list:
        state.remember_pod(pod)
    for key in list(state.pods):
        if key not in seen_pods:
            state.forget_pod(key)
    state.healthy_at = asyncio.get_running_loop().time()
    for key, crawljob in list(state.crawljobs.items()):
        if not crawljob.status.terminal or crawljob.meta.annotations.keys() & {
            resource.ANNOTATION_RERUN,
            resource.ANNOTATION_CANCEL,
        }:
            try:
                await reconcile(state, key)
            except (RetryLater, kube.KubeError) as exc:
                log.warning("%s: reconcile failed (the next resync retries): %s", key[1], exc)
    state.kick(urgent=True)
    await cancel_orphans(state)
    await collect_garbage(state)


async def cancel_orphans(state: State) -> None:
    """Delete Jobs whose CrawlJob is gone (deleted while the operator was down, and no GC ran)."""
    candidates: list[tuple[Key, str, str | None]] = []
    for (namespace, job_name), job in list(state.jobs.items()):
        owner = job.crawljob
        owner_uid = job.meta.owner_uids[0] if job.meta.owner_uids else None
        if owner and (namespace, owner) not in state.crawljobs and not job.meta.deletion_timestamp:
            candidates.append(((namespace, job_name), owner, owner_uid))
    if not candidates:
        return
    # Confirm with a fresh list: the view may simply not have seen a new CrawlJob yet.
    fresh = await state.client.list(kube.CRAWLJOBS, state.settings.namespace)
    alive = {(meta.key, meta.uid) for meta in map(Meta.parse, fresh)}
    for (namespace, job_name), owner, owner_uid in candidates:
        if ((namespace, owner), owner_uid) in alive:
            continue
        log.info(
            "%s: its CrawlJob is gone; deleting the orphaned Job %s",
            owner,
            job_name,
            extra={"crawljob": owner},
        )
        await delete_job(state, namespace, job_name)
        state.jobs.pop((namespace, job_name), None)


async def collect_garbage(state: State) -> None:
    """Delete finished CrawlJobs past the TTL or beyond the history limits (their Jobs follow)."""
    settings = state.settings
    if (
        settings.finished_ttl_seconds is None
        and settings.successful_history_limit is None
        and (settings.failed_history_limit is None)
    ):
        return
    by_namespace: dict[str, list[CrawlJob]] = defaultdict(list)
    for (namespace, _), crawljob in state.crawljobs.items():
        by_namespace[namespace].append(crawljob)
    now = datetime.datetime.now(tz=datetime.UTC)
    for namespace, items in by_namespace.items():
        # A CrawlJob a sweep still looks at stays, or the sweep would run its object again.
        kept = sweep.protected_names(state.sources.values(), namespace, [item.body for item in items])
        doomed = gc.select_for_deletion(
            [item for item in items if item.meta.name not in kept],
            now,
            settings.finished_ttl_seconds,
            settings.successful_history_limit,
            settings.failed_history_limit,
        )
        for name in doomed:
            try:
                await state.client.delete(kube.CRAWLJOBS, namespace, name, propagation="Background")
                state.metrics.garbage_collected.inc()
                log.info(
                    "%s: garbage-collected (finished, past TTL or history limit)",
                    name,
                    extra={"crawljob": name},
                )
            except kube.NotFound:
                pass  # deleted meanwhile: what the collection wanted
            except kube.KubeError as exc:
                log.warning("cannot garbage-collect %s (the next resync retries): %s", name, exc)


async def resync_loop(state: State) -> None:
    """resync() every settings.resync_seconds; a failed one is retried after 1, 2, 4 s… (at most
    RESYNC_RETRY_CAP_SECONDS, never more than the period), so the view and /healthz recover within
    seconds of the API's return rather than a full period later."""
    retry = resilience.CappedBackoffs(
        first=min(1.0, state.settings.resync_seconds),
        cap=min(RESYNC_RETRY_CAP_SECONDS, state.settings.resync_seconds),
    )
    failures = 0
    while True:
        await asyncio.sleep(retry.delay(failures) if failures else state.settings.resync_seconds)
        try:
            await resync(state)
        except kube.KubeError as exc:
            failures += 1
            log.warning("resync failed (retry in %.0fs): %s", retry.delay(failures), exc)
            continue
        except Exception:
            failures += 1
            log.exception("resync failed unexpectedly (retry in %.0fs)", retry.delay(failures))
            continue
        if failures:
            log.info("resync succeeded again after %d failed attempts", failures)
        failures = 0
