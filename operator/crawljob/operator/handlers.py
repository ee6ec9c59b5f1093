"""kopf handlers: thin adapters that keep a view of CrawlJobs, Jobs and Pods and act on it.

Decisions are made by the pure modules (`jobs`, `status`, `queue`, `gc`); this module only reads
events, calls them and writes what they say through `kube`. No finalizers are used (no delete or
timer handlers on CrawlJobs): deletions never hang while the operator is down; cancellation is done
from the DELETED event, backed by owner references for the cluster's garbage collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import kopf

from crawljob import kube, resource
from crawljob.operator import gc, jobs, queue, resilience, status
from crawljob.operator.view import (
    ANNOTATION_CANCEL,
    ANNOTATION_RERUN,
    MANAGED,
    POSITION_EXACT_HEAD,
    POSITION_HEAD_SECONDS,
    POSITION_REFRESH_SECONDS,
    SCHEDULE_COALESCE_SECONDS,
    SCHEDULE_MIN_INTERVAL_SECONDS,
    Body,
    Key,
    State,
    get_state,
    job_finished,
    key_of,
    log,
    post_event,
    sequenced_of,
    utc_now,
    write_status,
)

# A failed resync is retried sooner than the period, with backoffs up to this (seconds).
RESYNC_RETRY_CAP_SECONDS = 5.0

# ---- reconciling one CrawlJob ----


async def reconcile(state: State, key: Key) -> None:
    """Bring one CrawlJob's status in line with its Job and Pods (and handle a re-run request)."""
    async with state.locks[key]:
        crawljob = state.crawljobs.get(key)
        if crawljob is None or (crawljob.get("metadata") or {}).get("deletionTimestamp"):
            return
        namespace, name = key
        crawljob = await _maybe_cancel(state, crawljob)
        crawljob = await _maybe_rerun(state, crawljob)
        current = crawljob.get("status") or {}
        uid = str((crawljob.get("metadata") or {}).get("uid") or "")
        expected = jobs.job_name(name, jobs.run_number(crawljob))
        job = state.jobs.get((namespace, expected))
        if job is not None and uid and not jobs.is_owned_by(job, uid):
            # A Job of an earlier CrawlJob with the same name (no GC in some setups): not ours.
            log.warning("%s: Job %s belongs to another object; deleting it", name, expected)
            await _delete_job(state, namespace, expected)
            return
        if status.is_terminal(current.get("phase")):
            return
        if job is None:
            if current.get("jobName") == expected and (namespace, name) not in state.creating:
                # We made it before: is it really gone (deleted behind our back)?
                try:
                    found = await state.client.get(kube.JOBS, namespace, expected)
                except kube.NotFound:
                    await write_status(state, crawljob, status.job_deleted(expected, utc_now()), expected)
                    state.kick(urgent=True)
                    return
                except kube.KubeError as exc:
                    raise kopf.TemporaryError(f"cannot read Job {expected}: {exc}", delay=2) from exc
                state.remember(state.jobs, found)
                job = found
            else:
                return  # waiting for a slot: the scheduler writes Queued and creates the Job
        if job_finished(job):
            state.kick(urgent=True)  # its slot is free whatever the status write below does
            if not status.pods_explain_verdict(job, state.pods_of(namespace, expected)):
                # The Job's and the Pods' watch events race: read the Pods (termination message) fresh.
                for pod in await _list_quietly(state, kube.PODS, namespace, {"job-name": expected}):
                    state.remember_pod(pod)
        observation = status.observe(job, state.pods_of(namespace, expected), utc_now())
        await write_status(state, crawljob, observation, expected)
        if status.is_terminal(observation.phase):
            state.kick(urgent=True)


async def _maybe_cancel(state: State, crawljob: Body) -> Body:
    """Cancel the current run when the crawljob.io/cancel annotation carries a value not acted on yet.

    The CrawlJob stays, in phase Cancelled: its Job (if any) and the Job's Pods are deleted, a queued
    one simply leaves the queue. On a finished CrawlJob the value is recorded and ignored.
    """
    annotations = (crawljob.get("metadata") or {}).get("annotations") or {}
    current = crawljob.get("status") or {}
    token = status.cancel_request(annotations.get(ANNOTATION_CANCEL), current)
    if token is None:
        return crawljob
    key = key_of(crawljob)
    namespace, name = key
    if status.is_terminal(current.get("phase")):
        try:
            updated = await state.client.patch(
                kube.CRAWLJOBS, namespace, name, {"status": {"cancelToken": token}}, "status"
            )
        except kube.KubeError as exc:
            raise kopf.TemporaryError(f"cannot record the cancel request of {name}: {exc}", delay=2) from exc
        state.remember(state.crawljobs, updated)
        message = f"cancel request {token!r} ignored: the crawl already ended ({current.get('phase')})"
        await post_event(state, crawljob, "CancelIgnored", message, False)
        return state.crawljobs.get(key, updated)
    uid = str((crawljob.get("metadata") or {}).get("uid") or "")
    job_names = {
        str(job["metadata"]["name"])
        for job in state.jobs_of(namespace, name)
        if not uid or jobs.is_owned_by(job, uid)
    }
    if current.get("jobName"):
        job_names.add(str(current["jobName"]))
    # What the Job had got to (start time, attempts), before it goes.
    seen_job = state.jobs.get((namespace, str(current.get("jobName") or "")))
    so_far = (
        status.observe(seen_job, state.pods_of(namespace, str(current["jobName"])), utc_now())
        if seen_job
        else None
    )
    for job_name in sorted(job_names):
        await _delete_job(state, namespace, job_name)
        state.jobs.pop((namespace, job_name), None)
    state.position_written.pop(key, None)
    observation = status.cancelled(
        token,
        current.get("jobName") or (sorted(job_names)[-1] if job_names else None),
        utc_now(),
        max(int(current.get("attempts") or 0), so_far.attempts if so_far else 0),
        current.get("startTime") or (so_far.start_time if so_far else None),
    )
    updated = await write_status(state, crawljob, observation, current.get("jobName"))
    state.kick(urgent=True)
    return updated


async def _maybe_rerun(state: State, crawljob: Body) -> Body:
    """Start a new run when the crawljob.io/rerun annotation carries a token not seen before."""
    token = ((crawljob.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_RERUN)
    current = crawljob.get("status") or {}
    if not token or token == current.get("rerunToken"):
        return crawljob
    namespace, name = key_of(crawljob)
    if not status.is_terminal(current.get("phase")):
        patch: Body = {"rerunToken": token}
        message = (
            f"re-run {token!r} ignored: the crawl has not finished (phase {current.get('phase') or 'new'})"
        )
        reason, warning = "RerunIgnored", True
    else:
        run = jobs.run_number(crawljob) + 1
        patch = {
            "rerunToken": token,
            "run": run,
            "phase": "Pending",
            "reason": "Rerun",
            "message": f"re-run {token!r} requested: waiting to start run {run}",
            "jobName": None,
            "attempts": 0,
            "startTime": None,
            "completionTime": None,
            "result": None,
            "progress": None,
        }
        message, reason, warning = str(patch["message"]), "Rerun", False
        old = current.get("jobName")
        if old:
            state.spawn(_delete_job(state, namespace, str(old)))
    try:
        updated = await state.client.patch(kube.CRAWLJOBS, namespace, name, {"status": patch}, "status")
    except kube.KubeError as exc:
        raise kopf.TemporaryError(f"cannot record the re-run of {name}: {exc}", delay=2) from exc
    state.remember(state.crawljobs, updated)
    await post_event(state, crawljob, reason, message, warning)
    state.kick(urgent=True)
    return state.crawljobs.get((namespace, name), updated)


async def _delete_job(state: State, namespace: str, job_name: str) -> None:
    """Delete a Job (foreground) and, explicitly, its Pods (where garbage collection is slow or absent)."""
    with contextlib.suppress(kube.NotFound):
        try:
            await state.client.delete(kube.JOBS, namespace, job_name, propagation="Foreground")
        except kube.KubeError as exc:
            state.metrics.api_errors.labels("delete").inc()
            log.warning("cannot delete Job %s: %s", job_name, exc)
    pods = await _list_quietly(state, kube.PODS, namespace, {"job-name": job_name})
    for pod in pods + state.pods_of(namespace, job_name):
        with contextlib.suppress(kube.KubeError):
            await state.client.delete(kube.PODS, namespace, pod["metadata"]["name"])


async def _list_quietly(
    state: State, what: kube.Resource, namespace: str | None, labels: Mapping[str, str]
) -> list[Body]:
    try:
        return await state.client.list(what, namespace, labels)
    except kube.KubeError as exc:
        log.warning("cannot list %s: %s", what.plural, exc)
        return []


# ---- admission under the cap ----


def _needs_job(state: State, crawljob: Mapping[str, Any], key: Key | None = None) -> tuple[bool, bool]:
    """(holds a slot, waits for one) for one CrawlJob."""
    namespace, name = key or key_of(crawljob)
    current = crawljob.get("status") or {}
    if current.get("phase") in resource.TERMINAL_PHASES or (crawljob.get("metadata") or {}).get(
        "deletionTimestamp"
    ):
        return False, False
    if (namespace, name) in state.creating:
        return True, False
    expected = jobs.job_name(name, jobs.run_number(crawljob))
    job = state.jobs.get((namespace, expected))
    if job is not None:
        return not job_finished(job), False
    if current.get("jobName") == expected:
        return True, False  # its Job vanished: reconcile() fails it; count it until then
    return False, True


async def schedule(state: State) -> None:
    """Admit waiting CrawlJobs into free slots (FIFO), supersede stale ones, keep queue positions current."""
    # Only unfinished CrawlJobs take part in the queue; finished ones matter only as newer events.
    sequenced: list[queue.Sequenced] = []
    for key in list(state.sequenced_keys):
        crawljob = state.crawljobs.get(key)
        if crawljob is None:
            state.sequenced_keys.discard(key)
            continue
        sequenced.append(sequenced_of(key, crawljob, _needs_job(state, crawljob, key)[1]))
    doomed: dict[str, str] = {}
    if sequenced:
        newest = queue.newest_events(sequenced)
        state.newest = {obj: _split(item.name) for obj, item in newest.items()}
        doomed = queue.superseded(sequenced)
    candidates = []
    waiting_keys: dict[str, Key] = {}
    for key in list(state.open_keys):
        crawljob = state.crawljobs.get(key)
        if crawljob is None or (crawljob.get("status") or {}).get("phase") in resource.TERMINAL_PHASES:
            state.open_keys.discard(key)
            continue
        active, waiting = _needs_job(state, crawljob, key)
        name = f"{key[0]}/{key[1]}"
        if name in doomed:
            if key not in state.queued_writes:
                state.queued_writes.add(key)
                state.spawn(_write_superseded(state, key))
            continue
        if active or waiting:
            created = str((crawljob.get("metadata") or {}).get("creationTimestamp") or "")
            candidates.append(queue.Candidate(name, created, active, waiting))
        if waiting:
            waiting_keys[name] = key
    plan = queue.plan(candidates, state.settings.max_active)
    length = len(plan.positions)
    state.free_slots = max(0, state.settings.max_active - plan.active)
    state.metrics.queue_length.set(length)
    state.metrics.active.set(plan.active)
    for name in plan.admit:
        key = waiting_keys[name]
        state.creating.add(key)
        state.admitted.put_nowait(key)
    for name, position in plan.positions.items():
        key = waiting_keys[name]
        waiting_body = state.crawljobs.get(key)
        if waiting_body is None or key in state.queued_writes:
            continue
        current = waiting_body.get("status") or {}
        if current.get("phase") == "Queued":
            # Already queued: rewrite the position only when due (cheap test first), and changed.
            if not _position_due(state, key, position):
                continue
            message = status.queued(position, length, state.settings.max_active).message
            if current.get("message") == message:
                continue
            if not state.position_budget.take(asyncio.get_running_loop().time()):
                continue
        state.position_written[key] = asyncio.get_running_loop().time()
        state.queued_writes.add(key)
        state.spawn(_write_queued(state, key, position, length))


def _split(name: str) -> Key:
    namespace, _, rest = name.partition("/")
    return (namespace, rest)


def _newer_event(state: State, key: Key, crawljob: Mapping[str, Any]) -> Body | None:
    """The CrawlJob of a newer event of the same object, if the operator has seen one."""
    own = sequenced_of(key, crawljob, True)
    if not own.sequencer.strip():
        return None
    newest_key = state.newest.get(own.obj)
    newest = state.crawljobs.get(newest_key) if newest_key and newest_key != key else None
    if newest is None:
        return None
    other = sequenced_of(key_of(newest), newest, False)
    return newest if queue.compare_sequencers(other.sequencer, own.sequencer) > 0 else None


def _superseded_by(crawljob: Mapping[str, Any], newer: Mapping[str, Any]) -> status.Observation:
    def sequencer(body: Mapping[str, Any]) -> str:
        return str(((body.get("spec") or {}).get("source") or {}).get("sequencer") or "")

    return status.superseded(
        str((newer.get("metadata") or {}).get("name")), sequencer(newer), sequencer(crawljob), utc_now()
    )


async def _write_superseded(state: State, key: Key) -> None:
    try:
        async with state.locks[key]:
            crawljob = state.crawljobs.get(key)
            if crawljob is None or not _needs_job(state, crawljob, key)[1]:
                return
            newer = _newer_event(state, key, crawljob)
            if newer is None:
                return
            state.position_written.pop(key, None)
            with contextlib.suppress(kopf.TemporaryError):
                await write_status(state, crawljob, _superseded_by(crawljob, newer), None)
    finally:
        state.queued_writes.discard(key)
        state.kick()


def _position_due(state: State, key: Key, position: int) -> bool:
    """Whether a changed queue position is worth a status write now.

    Each admission moves every waiting CrawlJob up one place; writing them all every time costs
    O(queue length) writes per admission. A position is rewritten at most every
    POSITION_HEAD_SECONDS near the head of the queue and every POSITION_REFRESH_SECONDS behind it,
    and all rewrites together at most POSITION_WRITES_PER_SECOND.
    """
    interval = POSITION_HEAD_SECONDS if position <= POSITION_EXACT_HEAD else POSITION_REFRESH_SECONDS
    last = state.position_written.get(key, 0.0)
    return asyncio.get_running_loop().time() - last >= interval


async def _write_queued(state: State, key: Key, position: int, length: int) -> None:
    try:
        async with state.locks[key]:
            crawljob = state.crawljobs.get(key)
            if crawljob is None or not _needs_job(state, crawljob, key)[1]:
                return
            observation = status.queued(position, max(length, position), state.settings.max_active)
            with contextlib.suppress(kopf.TemporaryError):
                await write_status(state, crawljob, observation, None)
    finally:
        state.queued_writes.discard(key)
        state.kick()


async def create_job(state: State, key: Key) -> None:
    """Create the Job of an admitted CrawlJob; a 409 adopts the Job when it is ours (restart safety)."""
    name = key[1]
    state.position_written.pop(key, None)
    try:
        await _create_job_locked(state, key)
    except (kube.KubeError, kopf.TemporaryError) as exc:
        state.metrics.api_errors.labels("create").inc()
        log.warning("%s: cannot create its Job yet (will retry): %s", name, exc, extra={"crawljob": name})
        return
    finally:
        state.creating.discard(key)
        state.kick()
    # The status write (and its Event) runs beside the next creation: creation stays in FIFO order
    # without waiting for it.
    state.spawn(reconcile_quietly(state, key))


async def _create_job_locked(state: State, key: Key) -> None:
    namespace, name = key
    async with state.locks[key]:
        crawljob = state.crawljobs.get(key)
        if crawljob is None or not (crawljob.get("metadata") or {}).get("uid"):
            return
        if status.is_terminal((crawljob.get("status") or {}).get("phase")):
            return  # cancelled (or superseded) after it was admitted
        newer = _newer_event(state, key, crawljob)
        if newer is not None:
            await write_status(state, crawljob, _superseded_by(crawljob, newer), None)
            return
        try:
            manifest = jobs.build_job(crawljob, state.settings)
        except (KeyError, TypeError, ValueError) as exc:
            await write_status(
                state, crawljob, status.invalid_spec(f"cannot build the Job: {exc!r}", utc_now()), None
            )
            return
        job_name = manifest["metadata"]["name"]
        try:
            created = await state.client.create(kube.JOBS, namespace, manifest)
            state.metrics.jobs_created.inc()
            event_time = gc.parse_time(((crawljob.get("spec") or {}).get("source") or {}).get("eventTime"))
            if event_time is not None:
                lag = (datetime.datetime.now(tz=datetime.UTC) - event_time).total_seconds()
                state.metrics.start_lag.observe(max(0.0, lag))
        except kube.Conflict:
            created = await state.client.get(kube.JOBS, namespace, job_name)
            if not jobs.is_owned_by(created, crawljob["metadata"]["uid"]):
                message = f"a Job named {job_name} exists and is not owned by this CrawlJob; delete it"
                await write_status(state, crawljob, status.invalid_spec(message, utc_now()), None)
                return
            state.metrics.jobs_adopted.inc()
            log.info("%s: adopted existing Job %s", name, job_name, extra={"crawljob": name})
        except kube.Invalid as exc:
            await write_status(
                state, crawljob, status.invalid_spec(f"the Job was refused: {exc}", utc_now()), None
            )
            return
        state.remember(state.jobs, created)


async def reconcile_quietly(state: State, key: Key) -> None:
    """reconcile() for background tasks: failures are logged; the next event or resync retries."""
    try:
        await reconcile(state, key)
    except (kube.KubeError, kopf.TemporaryError) as exc:
        log.warning("%s: reconcile failed (will retry): %s", key[1], exc, extra={"crawljob": key[1]})


async def creator_loop(state: State) -> None:
    """Create the admitted CrawlJobs' Jobs one at a time, in admission (FIFO) order."""
    while True:
        key = await state.admitted.get()
        await create_job(state, key)


async def scheduler_loop(state: State) -> None:
    """Run schedule() whenever something changed.

    Event-driven: a freed slot (a Job finished or vanished, a CrawlJob ended or was deleted, a new
    CrawlJob while slots are free) runs a pass at once, so the next queued CrawlJob gets its Job
    without waiting; other changes (status writes, progress) are coalesced into one pass per
    SCHEDULE_COALESCE_SECONDS, which keeps a burst of 1,000 events from costing 1,000 passes.
    """
    while True:
        await state.wake.wait()
        if not state.slot_freed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.slot_freed.wait(), SCHEDULE_COALESCE_SECONDS)
        state.wake.clear()
        state.slot_freed.clear()
        try:
            await schedule(state)
        except Exception:
            log.exception("scheduling failed; will retry on the next change")
        # The kicks of one finished Job (its event, its terminal status) land in one pass.
        await asyncio.sleep(SCHEDULE_MIN_INTERVAL_SECONDS)


# ---- periodic resync and garbage collection ----


async def resync(state: State) -> None:
    """Re-read everything from the API, reconcile every unfinished CrawlJob, and collect garbage."""
    namespace = state.settings.namespace
    crawljobs = await state.client.list(kube.CRAWLJOBS, namespace)
    job_list = await state.client.list(kube.JOBS, namespace, MANAGED)
    pod_list = await state.client.list(kube.PODS, namespace, MANAGED)
    for store, items in ((state.crawljobs, crawljobs), (state.jobs, job_list)):
        seen = {key_of(item) for item in items}
        for item in items:
            state.remember(store, item)
        for key in list(store):
            if key not in seen and key not in state.creating:
                store.pop(key, None)
    seen_pods = {key_of(item) for item in pod_list}
    for pod in pod_list:
        state.remember_pod(pod)
    for key in list(state.pods):
        if key not in seen_pods:
            state.forget_pod(key)
    state.healthy_at = asyncio.get_running_loop().time()
    phases: dict[str, int] = defaultdict(int)
    for key, crawljob in list(state.crawljobs.items()):
        phases[str((crawljob.get("status") or {}).get("phase") or "New")] += 1
        if not status.is_terminal((crawljob.get("status") or {}).get("phase")) or (
            (crawljob.get("metadata") or {}).get("annotations") or {}
        ).keys() & {ANNOTATION_RERUN, ANNOTATION_CANCEL}:
            with contextlib.suppress(kopf.TemporaryError, kube.KubeError):
                await reconcile(state, key)
    for phase in resource.PHASES:
        state.metrics.phase.labels(phase).set(phases.get(phase, 0))
    state.kick(urgent=True)
    await cancel_orphans(state)
    await collect_garbage(state)


async def cancel_orphans(state: State) -> None:
    """Delete Jobs whose CrawlJob is gone (deleted while the operator was down, and no GC ran)."""
    candidates: list[tuple[Key, str, str | None]] = []
    for (namespace, job_name), job in list(state.jobs.items()):
        metadata = job.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(resource.LABEL_CRAWLJOB)
        owner_uid = next((ref.get("uid") for ref in metadata.get("ownerReferences") or []), None)
        if owner and (namespace, owner) not in state.crawljobs and not metadata.get("deletionTimestamp"):
            candidates.append(((namespace, job_name), str(owner), owner_uid))
    if not candidates:
        return
    # Confirm with a fresh list: the view may simply not have seen a new CrawlJob yet.
    fresh = await state.client.list(kube.CRAWLJOBS, state.settings.namespace)
    alive = {(key_of(item), (item.get("metadata") or {}).get("uid")) for item in fresh}
    for (namespace, job_name), owner, owner_uid in candidates:
        if ((namespace, owner), owner_uid) in alive:
            continue
        log.info(
            "%s: its CrawlJob is gone; deleting the orphaned Job %s",
            owner,
            job_name,
            extra={"crawljob": owner},
        )
        await _delete_job(state, namespace, job_name)
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
    by_namespace: dict[str, list[Body]] = defaultdict(list)
    for (namespace, _), crawljob in state.crawljobs.items():
        by_namespace[namespace].append(crawljob)
    now = datetime.datetime.now(tz=datetime.UTC)
    for namespace, items in by_namespace.items():
        doomed = gc.select_for_deletion(
            items,
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
                pass
            except kube.KubeError as exc:
                log.warning("cannot garbage-collect %s: %s", name, exc)


async def resync_loop(state: State) -> None:
    """resync() every settings.resync_seconds; a failed one is retried after 1, 2, 4 s… (at most
    RESYNC_RETRY_CAP_SECONDS, never more than the period), so the view and /healthz recover within
    seconds of the API's return rather than a full period later."""
    retry = resilience.CappedBackoffs(
        first=1.0, cap=min(RESYNC_RETRY_CAP_SECONDS, state.settings.resync_seconds)
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


# ---- kopf registration ----


async def on_crawljob_event(event: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """CrawlJob added/modified/deleted: keep the view, reconcile it, and rethink the queue."""
    state = get_state(memo)
    body = event.get("object") or {}
    key = key_of(body)
    if event.get("type") == "DELETED":
        state.crawljobs.pop(key, None)
        state.position_written.pop(key, None)
        await cancel(state, body)
        state.kick(urgent=True)
        return
    new = key not in state.crawljobs
    state.remember(state.crawljobs, body)
    _note_event_order(state, key, body)
    await reconcile(state, key)
    state.kick(urgent=new and state.free_slots > 0)


def _note_event_order(state: State, key: Key, crawljob: Mapping[str, Any]) -> None:
    """Keep state.newest current between scheduling passes (creation checks it)."""
    item = sequenced_of(key, crawljob, False)
    if not item.sequencer.strip():
        return
    known_key = state.newest.get(item.obj)
    known = state.crawljobs.get(known_key) if known_key else None
    if (
        known is None
        or queue.compare_sequencers(item.sequencer, sequenced_of(key, known, False).sequencer) > 0
    ):
        state.newest[item.obj] = key


async def cancel(state: State, crawljob: Mapping[str, Any]) -> None:
    """A deleted CrawlJob: delete its Jobs (foreground) and their Pods, whatever the GC does."""
    namespace, name = key_of(crawljob)
    uid = (crawljob.get("metadata") or {}).get("uid")
    known = state.jobs_of(namespace, name)
    listed = await _list_quietly(state, kube.JOBS, namespace, {resource.LABEL_CRAWLJOB: name})
    names = {job["metadata"]["name"] for job in known + listed if not uid or jobs.is_owned_by(job, str(uid))}
    for job_name in sorted(names):
        finished = job_finished(state.jobs.get((namespace, job_name)) or {})
        await _delete_job(state, namespace, job_name)
        if not finished:
            log.info("%s: deleted; its Job %s was cancelled", name, job_name, extra={"crawljob": name})


async def on_job_event(event: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """A Job of ours changed: reflect it on its CrawlJob."""
    state = get_state(memo)
    body = event.get("object") or {}
    key = key_of(body)
    if event.get("type") == "DELETED":
        state.jobs.pop(key, None)
        freed = True
    else:
        state.remember(state.jobs, body)
        freed = job_finished(body)
    state.kick(urgent=freed)  # before the status write: the slot is free now
    owner = ((body.get("metadata") or {}).get("labels") or {}).get(resource.LABEL_CRAWLJOB)
    if owner:
        await reconcile(state, (key[0], owner))


async def on_pod_event(event: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """A worker Pod changed: reflect it on its CrawlJob (running, stuck pulling, terminated)."""
    state = get_state(memo)
    body = event.get("object") or {}
    key = key_of(body)
    if event.get("type") == "DELETED":
        state.forget_pod(key)
        return
    state.remember_pod(body)
    owner = ((body.get("metadata") or {}).get("labels") or {}).get(resource.LABEL_CRAWLJOB)
    if owner:
        await reconcile(state, (key[0], owner))


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the resource handlers on *registry* (startup/cleanup/login live in operator_app)."""
    kopf.on.event(resource.GROUP, resource.VERSION, resource.PLURAL, registry=registry)(on_crawljob_event)
    kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)(on_job_event)
    kopf.on.event("", "v1", "pods", labels=MANAGED, registry=registry)(on_pod_event)
