"""Admission under the concurrency cap and Job creation: the scheduling pass (FIFO admission,
supersession, queue positions), the creator that turns admissions into Jobs, and their loops."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from typing import Any

from crawljob import kube
from crawljob.models import CrawlJob, Job, Key
from crawljob.operator import jobs, overrides, queue, shardjobs, specs, status, workload
from crawljob.operator.reconcile import reconcile_quietly
from crawljob.operator.view import RetryLater, State, log
from crawljob.operator.writes import post_event, write_status
from crawljob.times import parse_time, utc_now

# A change that cannot open a slot (a status write, a progress patch) is coalesced with the others
# of this window into one scheduling pass; a freed slot is refilled at once.
SCHEDULE_COALESCE_SECONDS = 0.25
SCHEDULE_MIN_INTERVAL_SECONDS = 0.01


def needs_job(state: State, crawljob: CrawlJob) -> tuple[bool, bool]:
    """(holds a slot, waits for one) for one CrawlJob."""
    namespace, name = crawljob.key
    if crawljob.status.terminal or crawljob.meta.deletion_timestamp:
        return False, False
    if crawljob.key in state.creating:
        return True, False
    expected = jobs.job_name(name, crawljob.status.run)
    job = state.jobs.get((namespace, expected))
    if job is not None:
        return not workload.job_finished(job.status), False
    run = shardjobs.shard_run(state, crawljob)
    if run is not None:
        return shardjobs.holds_slot(run, crawljob.status.job_name)
    if crawljob.status.job_name == expected:
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
        sequenced.append(queue.sequenced_of(crawljob, needs_job(state, crawljob)[1]))
    doomed: dict[str, str] = {}
    if sequenced:
        newest = queue.newest_events(sequenced)
        state.newest = {obj: _split(item.name) for obj, item in newest.items()}
        doomed = queue.superseded(sequenced)
    candidates = []
    waiting_keys: dict[str, Key] = {}
    for key in list(state.open_keys):
        crawljob = state.crawljobs.get(key)
        if crawljob is None or crawljob.status.terminal:
            state.open_keys.discard(key)
            continue
        active, waiting = needs_job(state, crawljob)
        name = f"{key[0]}/{key[1]}"
        if name in doomed:
            if key not in state.queued_writes:
                state.queued_writes.add(key)
                state.spawn(_write_superseded(state, key))
            continue
        if active or waiting:
            candidates.append(queue.Candidate(name, crawljob.meta.creation_timestamp, active, waiting))
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
    now = asyncio.get_running_loop().time()
    for name, position in plan.positions.items():
        key = waiting_keys[name]
        waiting_body = state.crawljobs.get(key)
        if waiting_body is None or key in state.queued_writes:
            continue
        if waiting_body.status.phase == "Queued":
            # Already queued: rewrite the position only when due (cheap test first), and changed.
            if not queue.position_due(position, state.position_written.get(key, 0.0), now):
                continue
            message = status.queued(position, length, state.settings.max_active).message
            if waiting_body.status.message == message:
                continue
            if not state.position_budget.take(now):
                continue
        state.position_written[key] = now
        state.queued_writes.add(key)
        state.spawn(_write_queued(state, key, position, length))


def _split(name: str) -> Key:
    namespace, _, rest = name.partition("/")
    return (namespace, rest)


def _newer_event(state: State, crawljob: CrawlJob) -> CrawlJob | None:
    """The CrawlJob of a newer event of the same object, if the operator has seen one."""
    own = queue.sequenced_of(crawljob, True)
    if not own.sequencer.strip():
        return None
    newest_key = state.newest.get(own.obj)
    newest = state.crawljobs.get(newest_key) if newest_key and newest_key != crawljob.key else None
    if newest is None:
        return None
    return newest if queue.compare_sequencers(newest.source.sequencer, own.sequencer) > 0 else None


def _superseded_by(crawljob: CrawlJob, newer: CrawlJob) -> status.Observation:
    return status.superseded(newer.meta.name, newer.source.sequencer, crawljob.source.sequencer, utc_now())


async def _write_superseded(state: State, key: Key) -> None:
    try:
        async with state.locks[key]:
            crawljob = state.crawljobs.get(key)
            if crawljob is None or not needs_job(state, crawljob)[1]:
                return
            newer = _newer_event(state, crawljob)
            if newer is None:
                return
            state.position_written.pop(key, None)
            await write_status(state, crawljob, _superseded_by(crawljob, newer), None)
    except RetryLater as exc:
        log.warning("%s: %s (the next pass retries)", key[1], exc, extra={"crawljob": key[1]})
    finally:
        state.queued_writes.discard(key)
        state.kick()


async def _write_queued(state: State, key: Key, position: int, length: int) -> None:
    try:
        async with state.locks[key]:
            crawljob = state.crawljobs.get(key)
            if crawljob is None or not needs_job(state, crawljob)[1]:
                return
            observation = status.queued(position, max(length, position), state.settings.max_active)
            await write_status(state, crawljob, observation, None)
    except RetryLater as exc:
        log.warning("%s: %s (the next pass retries)", key[1], exc, extra={"crawljob": key[1]})
    finally:
        state.queued_writes.discard(key)
        state.kick()


async def create_job(state: State, key: Key) -> None:
    """Create the Job of an admitted CrawlJob; a 409 adopts the Job when it is ours (restart safety)."""
    name = key[1]
    state.position_written.pop(key, None)
    try:
        await _create_job_locked(state, key)
    except (kube.KubeError, RetryLater) as exc:
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
        if crawljob is None or not crawljob.meta.uid:
            return
        if crawljob.status.terminal:
            return  # cancelled (or superseded) after it was admitted
        newer = _newer_event(state, crawljob)
        if newer is not None:
            await write_status(state, crawljob, _superseded_by(crawljob, newer), None)
            return
        refusal = _refusal(state, crawljob)
        if refusal is not None:
            await write_status(state, crawljob, refusal, None)
            return
        run = shardjobs.shard_run(state, crawljob)
        if run is not None:
            await _create_shard_jobs(state, crawljob, run)
            return
        try:
            manifest = jobs.build_job(crawljob.body, state.settings, state.job_features)
        except Exception as exc:  # specs.py checks what build_job reads; anything it missed fails this one
            log.exception("%s: cannot build its Job", name, extra={"crawljob": name})
            problem = f"cannot build the Job: {type(exc).__name__}: {str(exc)[:200]}"
            await write_status(state, crawljob, status.invalid_spec(problem, utc_now()), None)
            return
        job_name = manifest["metadata"]["name"]
        try:
            created = await state.client.create(kube.JOBS, namespace, manifest)
            state.metrics.jobs_created.inc()
            unknown = jobs.unknown_size(crawljob.body.get("spec") or {})
            if unknown is not None:
                log.warning("%s: %s", name, unknown, extra={"crawljob": name})
                state.spawn(post_event(state, crawljob.meta, "ShardSizeUnknown", unknown, warning=True))
            _observe_start_lag(state, crawljob)
        except kube.Conflict:
            created = await state.client.get(kube.JOBS, namespace, job_name)
            if not Job.parse(created).is_owned_by(crawljob.meta.uid):
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
        state.remember_job(created)


async def _create_shard_jobs(state: State, crawljob: CrawlJob, run: shardjobs.ShardRun) -> None:
    """Create the first shard Jobs of an admitted per-shard run (the next ones follow as shards end)."""
    had_jobs = bool(run.jobs)
    ended = await shardjobs.start(state, crawljob, run)
    if ended is not None:
        await write_status(state, crawljob, ended, run.stem)
        await shardjobs.stop_unfinished(state, crawljob)
        return
    if not had_jobs:
        _observe_start_lag(state, crawljob)


def _observe_start_lag(state: State, crawljob: CrawlJob) -> None:
    """The time from the S3 event to the crawl's (first) Job, when the event said when it was."""
    event_time = parse_time(crawljob.source.event_time)
    if event_time is not None:
        lag = (datetime.datetime.now(tz=datetime.UTC) - event_time).total_seconds()
        state.metrics.start_lag.observe(max(0.0, lag))


def _refusal(state: State, crawljob: CrawlJob) -> status.Observation | None:
    """Failed (InvalidSpec, OverrideNotAllowed) when the spec cannot or may not become a Job."""
    spec: Any = crawljob.body.get("spec")
    problem = specs.spec_problem(spec)
    if problem is not None:
        return status.invalid_spec(problem, utc_now())
    refused = overrides.override_refusal(spec, state.settings)
    if refused is not None:
        return status.override_not_allowed(refused, utc_now())
    return None


async def creator_loop(state: State) -> None:
    """Create the admitted CrawlJobs' Jobs one at a time, in admission (FIFO) order.

    One CrawlJob's failure never ends the loop: create_job fails that CrawlJob or leaves it for
    the next pass; anything else is logged, that CrawlJob is failed as InvalidSpec, and the loop
    goes on."""
    while True:
        key = await state.admitted.get()
        try:
            await create_job(state, key)
        except Exception as exc:
            log.exception("%s: creating its Job failed", key[1], extra={"crawljob": key[1]})
            await _fail_unexpectedly(state, key, exc)


async def _fail_unexpectedly(state: State, key: Key, exc: Exception) -> None:
    try:
        crawljob = state.crawljobs.get(key)
        if crawljob is not None and not crawljob.status.terminal:
            problem = f"the operator could not make its Job: {type(exc).__name__}: {str(exc)[:200]}"
            await write_status(state, crawljob, status.invalid_spec(problem, utc_now()), None)
    except Exception:
        log.exception("%s: cannot mark it Failed either; the next pass retries", key[1])


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


async def detect_job_features(state: State) -> None:
    """What the server's Job controller supports (Indexed Jobs for sharded crawls), from GET /version;
    read when this replica becomes active (a standby calls nothing but its peering object)."""
    try:
        state.job_features = jobs.features_of(await state.client.request("GET", "/version"))
    except kube.KubeError as exc:
        log.warning("cannot read the server version (%s): sharded CrawlJobs run one Job per shard", exc)
        state.job_features = jobs.JobFeatures(indexed=False)
    log.info("Job features of the API server: %s", state.job_features.describe())
