"""kopf handlers: thin adapters. Each reads one watch event, updates the view and calls the
reconciler; every decision is made elsewhere (`reconcile`, `admission`, and the pure modules).

Only `on.event` handlers, no finalizers (no delete or timer handlers on CrawlJobs): deletions never
hang while the operator is down; cancellation is done from the DELETED event, backed by owner
references for the cluster's garbage collector. kopf neither tracks nor retries failures here: the
next event and the periodic resync do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from crawljob import resource
from crawljob.models import CrawlJob, Job, Meta, key_of
from crawljob.operator import sweeper, workload
from crawljob.operator.reconcile import cancel, reconcile_quietly
from crawljob.operator.view import MANAGED, get_state


async def on_crawljob_event(event: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """CrawlJob added/modified/deleted: keep the view, reconcile it, and rethink the queue."""
    state = get_state(memo)
    body = event.get("object") or {}
    if event.get("type") == "DELETED":
        gone = CrawlJob.parse(body)
        state.crawljobs.pop(gone.key, None)
        state.position_written.pop(gone.key, None)
        await cancel(state, gone)
        state.shard_jobs_seen.pop(gone.key, None)
        state.kick(urgent=True)
        return
    new = key_of(body) not in state.crawljobs
    crawljob = state.remember_crawljob(body)
    state.note_newest(crawljob)
    await reconcile_quietly(state, crawljob.key)
    state.kick(urgent=new and state.free_slots > 0)


async def on_job_event(event: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """A Job of ours changed: reflect it on its CrawlJob."""
    state = get_state(memo)
    job = Job.parse(event.get("object") or {})
    if event.get("type") == "DELETED":
        state.jobs.pop(job.key, None)
        freed = True
    else:
        job = state.remember_job(job.body)
        freed = workload.job_finished(job.status)
    state.kick(urgent=freed)  # before the status write: the slot is free now
    if job.crawljob:
        await reconcile_quietly(state, (job.meta.namespace, job.crawljob))


async def on_pod_event(event: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """A worker Pod changed: reflect it on its CrawlJob (running, stuck pulling, terminated)."""
    state = get_state(memo)
    body = event.get("object") or {}
    if event.get("type") == "DELETED":
        state.forget_pod(key_of(body))
        return
    state.remember_pod(body)
    owner = Meta.parse(body).labels.get(resource.LABEL_CRAWLJOB)
    if owner:
        await reconcile_quietly(state, (key_of(body)[0], owner))


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the resource handlers on *registry* (startup/cleanup/login live in app.py)."""
    kopf.on.event(resource.GROUP, resource.VERSION, resource.PLURAL, registry=registry)(on_crawljob_event)
    kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)(on_job_event)
    kopf.on.event("", "v1", "pods", labels=MANAGED, registry=registry)(on_pod_event)
    # CrawlSources: no finalizers, nothing stored on them; the sweeper loop does the work.
    kopf.on.event("crawljob.io", "v1alpha1", "crawlsources", registry=registry)(on_crawlsource_event)


async def on_crawlsource_event(event: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """A CrawlSource was added, changed or deleted: keep the view and wake the sweeper."""
    state = get_state(memo)
    body = event.get("object") or {}
    if event.get("type") == "DELETED":
        state.sources.pop(key_of(body), None)
    else:
        sweeper.remember_source(state, body)
    state.sources_changed.set()
