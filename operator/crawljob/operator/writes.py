"""The operator's writes through the API: a CrawlJob status patch with its transition Event, an
Event, a Job deleted with its Pods (thin I/O; what to write is decided by the pure modules)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from crawljob import kube, resource
from crawljob.models import Body, CrawlJob, Meta, key_of
from crawljob.operator import events, status
from crawljob.operator.view import RetryLater, State, log
from crawljob.times import parse_time, utc_now


async def post_event(state: State, crawljob: Meta, reason: str, message: str, warning: bool) -> None:
    """A Kubernetes Event on the CrawlJob (best effort: failures are logged, never raised)."""
    now = datetime.datetime.now(tz=datetime.UTC)
    event = events.build_event(crawljob, reason, message, warning, state.instance, now)
    try:
        await state.client.create(kube.EVENTS, crawljob.namespace, event)
    except kube.KubeError as exc:
        state.metrics.api_errors.labels("event").inc()
        log.warning("cannot post event %s on %s: %s", reason, crawljob.name, exc)


async def sync_labels(state: State, body: Body) -> Body:
    """Bring the crawljob.io/phase and crawljob.io/bucket labels in line with the CrawlJob *body*
    (one metadata patch when the phase changed; best effort: the status already says it)."""
    labels = resource.labels_patch(body)
    if not labels:
        return body
    namespace, name = key_of(body)
    try:
        updated: Body = await state.client.patch(
            kube.CRAWLJOBS, namespace, name, {"metadata": {"labels": labels}}
        )
    except kube.KubeError as exc:
        state.metrics.api_errors.labels("labels").inc()
        log.warning("cannot update the labels of %s: %s", name, exc)
        return body
    return updated


async def write_status(
    state: State, crawljob: CrawlJob, observation: status.Observation, job_name: str | None
) -> CrawlJob:
    """Patch the CrawlJob's status to match *observation*; post an Event when the phase or reason changes."""
    current = crawljob.raw_status
    desired = status.desired_status(current, observation, crawljob.meta.generation, job_name, utc_now())
    patch = status.status_patch(current, desired)
    if not status.worth_writing(patch, current):
        return crawljob
    namespace, name = crawljob.key
    try:
        updated = await state.client.patch(kube.CRAWLJOBS, namespace, name, {"status": patch}, "status")
    except kube.NotFound:
        return crawljob
    except kube.KubeError as exc:
        state.metrics.api_errors.labels("status").inc()
        raise RetryLater(f"cannot update the status of {name}: {exc}") from exc
    kept = state.remember_crawljob(await sync_labels(state, updated)) if updated.get("metadata") else crawljob
    transitioned = crawljob.status.phase != observation.phase or crawljob.status.reason != observation.reason
    if transitioned:
        log.info(
            "%s: %s (%s) %s",
            name,
            observation.phase,
            observation.reason,
            observation.message,
            extra={"crawljob": name, "namespace": namespace, "phase": observation.phase},
        )
        state.metrics.transitions.labels(observation.phase, observation.reason).inc()
        if observation.phase == "Succeeded" and observation.result:
            result = observation.result
            state.metrics.rows.labels("written").inc(int(result.get("rowsWritten") or 0))
            state.metrics.rows.labels("rejected").inc(int(result.get("rowsRejected") or 0))
            state.metrics.bytes_read.inc(int(result.get("bytesRead") or 0))
        if status.is_terminal(observation.phase) and observation.start_time and observation.completion_time:
            started = parse_time(observation.start_time)
            finished = parse_time(observation.completion_time)
            if started and finished:
                state.metrics.duration.labels(observation.phase).observe((finished - started).total_seconds())
        await post_event(
            state,
            crawljob.meta,
            observation.reason,
            f"{observation.phase}: {observation.message}",
            observation.warning,
        )
    return kept


async def delete_job(state: State, namespace: str, job_name: str) -> None:
    """Delete a Job (foreground) and, explicitly, its Pods (where garbage collection is slow or absent)."""
    try:
        await state.client.delete(kube.JOBS, namespace, job_name, propagation="Foreground")
    except kube.NotFound:
        pass  # already gone: what deleting it wanted
    except kube.KubeError as exc:
        state.metrics.api_errors.labels("delete").inc()
        log.warning("cannot delete Job %s (the next resync retries): %s", job_name, exc)
    pods = await list_quietly(state, kube.PODS, namespace, {"job-name": job_name})
    names = {key_of(pod)[1] for pod in pods} | {pod.name for pod in state.pods_of(namespace, job_name)}
    for pod_name in sorted(names):
        try:
            await state.client.delete(kube.PODS, namespace, pod_name)
        except kube.NotFound:
            pass  # the Job's foreground deletion got there first
        except kube.KubeError as exc:
            state.metrics.api_errors.labels("delete").inc()
            log.warning("cannot delete Pod %s of Job %s: %s", pod_name, job_name, exc)


async def list_quietly(
    state: State, what: kube.Resource, namespace: str | None, labels: Mapping[str, str]
) -> list[Body]:
    """List *what*; on an API error log it and return nothing (the next resync reads again)."""
    try:
        return await state.client.list(what, namespace, labels)
    except kube.KubeError as exc:
        log.warning("cannot list %s: %s", what.plural, exc)
        return []
