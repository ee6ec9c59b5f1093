"""Reconciling one CrawlJob: its status follows its Job and Pods; cancel and re-run requests are
acted on; a deleted CrawlJob's Jobs are cancelled."""

from __future__ import annotations

from crawljob import kube, resource
from crawljob.models import Body, CrawlJob, Job, Key
from crawljob.operator import jobs, shardjobs, status, workload
from crawljob.operator.view import RetryLater, State, log
from crawljob.operator.writes import delete_job, list_quietly, post_event, write_status
from crawljob.times import utc_now


async def reconcile(state: State, key: Key) -> None:
    """Bring one CrawlJob's status in line with its Job and Pods (and handle a re-run request)."""
    async with state.locks[key]:
        crawljob = state.crawljobs.get(key)
        if crawljob is None or crawljob.meta.deletion_timestamp:
            return
        namespace, name = key
        crawljob = await _maybe_cancel(state, crawljob)
        crawljob = await _maybe_rerun(state, crawljob)
        expected = jobs.job_name(name, crawljob.status.run)
        job = state.jobs.get((namespace, expected))
        if job is not None and crawljob.meta.uid and not job.is_owned_by(crawljob.meta.uid):
            # A Job of an earlier CrawlJob with the same name (no GC in some setups): not ours.
            log.warning("%s: Job %s belongs to another object; deleting it", name, expected)
            await delete_job(state, namespace, expected)
            return
        if crawljob.status.terminal:
            # A per-shard run that ended: its shard Jobs still running go (retried until they are gone).
            await shardjobs.stop_unfinished(state, crawljob)
            return
        if job is None:
            run = shardjobs.shard_run(state, crawljob)
            if run is not None:
                if (
                    run.jobs or run.seen or crawljob.status.job_name == run.stem
                ) and key not in state.creating:
                    await shardjobs.reconcile_run(state, crawljob, run)
                return  # else waiting for a slot: the scheduler writes Queued and creates the Jobs
            if crawljob.status.job_name == expected and key not in state.creating:
                # We made it before: is it really gone (deleted behind our back)?
                try:
                    found = await state.client.get(kube.JOBS, namespace, expected)
                except kube.NotFound:
                    await write_status(state, crawljob, status.job_deleted(expected, utc_now()), expected)
                    state.kick(urgent=True)
                    return
                except kube.KubeError as exc:
                    raise RetryLater(f"cannot read Job {expected}: {exc}") from exc
                job = state.remember_job(found)
            else:
                return  # waiting for a slot: the scheduler writes Queued and creates the Job
        if workload.job_finished(job.status):
            state.kick(urgent=True)  # its slot is free whatever the status write below does
            if not workload.pods_explain_verdict(job.status, state.pods_of(namespace, expected)):
                # The Job's and the Pods' watch events race: read the Pods (termination message) fresh.
                for pod in await list_quietly(state, kube.PODS, namespace, {"job-name": expected}):
                    state.remember_pod(pod)
        observation = status.observe(job.status, state.pods_of(namespace, expected), utc_now())
        await write_status(state, crawljob, observation, expected)
        if status.is_terminal(observation.phase):
            state.kick(urgent=True)


async def reconcile_quietly(state: State, key: Key) -> None:
    """reconcile() for event handlers and background tasks: an API failure is logged; the next
    event or the periodic resync retries."""
    try:
        await reconcile(state, key)
    except (kube.KubeError, RetryLater) as exc:
        log.warning("%s: reconcile failed (will retry): %s", key[1], exc, extra={"crawljob": key[1]})


async def _maybe_cancel(state: State, crawljob: CrawlJob) -> CrawlJob:
    """Cancel the current run when the crawljob.io/cancel annotation carries a value not acted on yet.

    The CrawlJob stays, in phase Cancelled: its Job (if any) and the Job's Pods are deleted, a queued
    one simply leaves the queue. On a finished CrawlJob the value is recorded and ignored.
    """
    current = crawljob.status
    token = status.cancel_request(
        crawljob.meta.annotations.get(resource.ANNOTATION_CANCEL), current.cancel_token
    )
    if token is None:
        return crawljob
    namespace, name = crawljob.key
    if current.terminal:
        try:
            updated = await state.client.patch(
                kube.CRAWLJOBS, namespace, name, {"status": {"cancelToken": token}}, "status"
            )
        except kube.KubeError as exc:
            raise RetryLater(f"cannot record the cancel request of {name}: {exc}") from exc
        kept = state.remember_crawljob(updated)
        message = f"cancel request {token!r} ignored: the crawl already ended ({current.phase})"
        await post_event(state, crawljob.meta, "CancelIgnored", message, False)
        return kept
    uid = crawljob.meta.uid
    job_names = {job.meta.name for job in state.jobs_of(namespace, name) if not uid or job.is_owned_by(uid)}
    # What the Job (or the shard Jobs) had got to (start time, attempts), before they go.
    seen_job = state.jobs.get((namespace, current.job_name)) if current.job_name else None
    run = shardjobs.shard_run(state, crawljob) if seen_job is None else None
    sharded = run is not None and bool(run.jobs or run.seen or current.job_name == run.stem)
    if current.job_name and not sharded:
        job_names.add(current.job_name)
    so_far = None
    if seen_job is not None:
        so_far = status.observe(seen_job.status, state.pods_of(namespace, seen_job.meta.name), utc_now())
    elif run is not None and run.jobs:
        shard_jobs = {
            index: (job.status, state.pods_of(namespace, job.meta.name)) for index, job in run.jobs.items()
        }
        so_far = status.observe_shards(run.shards, shard_jobs, utc_now())
    for job_name in sorted(job_names):
        await delete_job(state, namespace, job_name)
        state.jobs.pop((namespace, job_name), None)
    state.position_written.pop(crawljob.key, None)
    shown: str | None
    if run is not None and sharded:
        shown, shards = run.stem, run.shards
    else:
        shown, shards = current.job_name or (sorted(job_names)[-1] if job_names else None), 0
    observation = status.cancelled(
        token,
        shown,
        utc_now(),
        max(current.attempts, so_far.attempts if so_far else 0),
        current.start_time or (so_far.start_time if so_far else None),
        shards=shards,
    )
    written = await write_status(state, crawljob, observation, current.job_name)
    state.kick(urgent=True)
    return written


async def _maybe_rerun(state: State, crawljob: CrawlJob) -> CrawlJob:
    """Start a new run when the crawljob.io/rerun annotation carries a token not seen before."""
    token = crawljob.meta.annotations.get(resource.ANNOTATION_RERUN)
    current = crawljob.status
    if not token or token == current.rerun_token:
        return crawljob
    namespace, name = crawljob.key
    if not current.terminal:
        patch: Body = {"rerunToken": token}
        message = f"re-run {token!r} ignored: the crawl has not finished (phase {current.phase or 'new'})"
        reason, warning = "RerunIgnored", True
    else:
        patch = status.rerun_patch(token, current.run + 1)
        message, reason, warning = str(patch["message"]), "Rerun", False
        # The finished run's Jobs go: its Job, or the Jobs of its shards.
        uid = crawljob.meta.uid
        old = {
            job.meta.name
            for job in state.shard_jobs_of(namespace, name)
            if job.run <= current.run and (not uid or job.is_owned_by(uid))
        }
        if current.job_name and current.job_name != jobs.shard_job_stem(name, current.run):
            old.add(current.job_name)
        for job_name in sorted(old):
            state.spawn(delete_job(state, namespace, job_name))
    try:
        updated = await state.client.patch(kube.CRAWLJOBS, namespace, name, {"status": patch}, "status")
    except kube.KubeError as exc:
        raise RetryLater(f"cannot record the re-run of {name}: {exc}") from exc
    kept = state.remember_crawljob(updated)
    await post_event(state, crawljob.meta, reason, message, warning)
    state.kick(urgent=True)
    return kept


async def cancel(state: State, crawljob: CrawlJob) -> None:
    """A deleted CrawlJob: delete its Jobs (foreground) and their Pods, whatever the GC does."""
    namespace, name = crawljob.key
    uid = crawljob.meta.uid
    known = state.jobs_of(namespace, name)
    listed = [
        Job.parse(body)
        for body in await list_quietly(state, kube.JOBS, namespace, {resource.LABEL_CRAWLJOB: name})
    ]
    names = {job.meta.name for job in known + listed if not uid or job.is_owned_by(uid)}
    for job_name in sorted(names):
        seen = state.jobs.get((namespace, job_name))
        finished = seen is not None and workload.job_finished(seen.status)
        await delete_job(state, namespace, job_name)
        if not finished:
            log.info("%s: deleted; its Job %s was cancelled", name, job_name, extra={"crawljob": name})
