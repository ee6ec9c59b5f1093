"""Reconciling one CrawlJob: its status follows its Job and Pods; cancel and re-run requests are
acted on; a deleted CrawlJob's Jobs are cancelled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crawljob import kube, resource
from crawljob.operator import jobs, status, workload
from crawljob.operator.view import Body, Key, RetryLater, State, key_of, log
from crawljob.operator.writes import delete_job, list_quietly, post_event, write_status
from crawljob.times import utc_now


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
            await delete_job(state, namespace, expected)
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
                    raise RetryLater(f"cannot read Job {expected}: {exc}") from exc
                state.remember(state.jobs, found)
                job = found
            else:
                return  # waiting for a slot: the scheduler writes Queued and creates the Job
        if workload.job_finished(job):
            state.kick(urgent=True)  # its slot is free whatever the status write below does
            if not workload.pods_explain_verdict(job, state.pods_of(namespace, expected)):
                # The Job's and the Pods' watch events race: read the Pods (termination message) fresh.
                for pod in await list_quietly(state, kube.PODS, namespace, {"job-name": expected}):
                    state.remember_pod(pod)
        observation = status.observe(job, state.pods_of(namespace, expected), utc_now())
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


async def _maybe_cancel(state: State, crawljob: Body) -> Body:
    """Cancel the current run when the crawljob.io/cancel annotation carries a value not acted on yet.

    The CrawlJob stays, in phase Cancelled: its Job (if any) and the Job's Pods are deleted, a queued
    one simply leaves the queue. On a finished CrawlJob the value is recorded and ignored.
    """
    annotations = (crawljob.get("metadata") or {}).get("annotations") or {}
    current = crawljob.get("status") or {}
    token = status.cancel_request(annotations.get(resource.ANNOTATION_CANCEL), current)
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
            raise RetryLater(f"cannot record the cancel request of {name}: {exc}") from exc
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
        await delete_job(state, namespace, job_name)
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
    token = ((crawljob.get("metadata") or {}).get("annotations") or {}).get(resource.ANNOTATION_RERUN)
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
            state.spawn(delete_job(state, namespace, str(old)))
    try:
        updated = await state.client.patch(kube.CRAWLJOBS, namespace, name, {"status": patch}, "status")
    except kube.KubeError as exc:
        raise RetryLater(f"cannot record the re-run of {name}: {exc}") from exc
    state.remember(state.crawljobs, updated)
    await post_event(state, crawljob, reason, message, warning)
    state.kick(urgent=True)
    return state.crawljobs.get((namespace, name), updated)


async def cancel(state: State, crawljob: Mapping[str, Any]) -> None:
    """A deleted CrawlJob: delete its Jobs (foreground) and their Pods, whatever the GC does."""
    namespace, name = key_of(crawljob)
    uid = (crawljob.get("metadata") or {}).get("uid")
    known = state.jobs_of(namespace, name)
    listed = await list_quietly(state, kube.JOBS, namespace, {resource.LABEL_CRAWLJOB: name})
    names = {job["metadata"]["name"] for job in known + listed if not uid or jobs.is_owned_by(job, str(uid))}
    for job_name in sorted(names):
        finished = workload.job_finished(state.jobs.get((namespace, job_name)) or {})
        await delete_job(state, namespace, job_name)
        if not finished:
            log.info("%s: deleted; its Job %s was cancelled", name, job_name, extra={"crawljob": name})
