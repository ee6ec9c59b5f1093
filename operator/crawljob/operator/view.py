"""The operator's view of the cluster (`State`, kept in kopf's memo) and the two writes every path
makes: a CrawlJob status patch with its transition Event, and a Kubernetes Event."""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import secrets
import socket
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from crawljob import kube, resource
from crawljob.operator import gc, queue, status
from crawljob.operator.metrics import OperatorMetrics
from crawljob.operator.settings import OperatorSettings

log = logging.getLogger("crawljob.operator")

Body = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

MANAGED = {resource.LABEL_MANAGED_BY: resource.MANAGED_BY}
ANNOTATION_RERUN = "crawljob.io/rerun"
ANNOTATION_CANCEL = "crawljob.io/cancel"
POSITION_EXACT_HEAD = 10
POSITION_HEAD_SECONDS = 2.0
POSITION_REFRESH_SECONDS = 30.0
# Rewrites of a changed position (not the first Queued write) share this budget, head of the queue
# first: when the queue moves fast every waiting CrawlJob would otherwise get a write as it nears
# the head, only to be admitted a moment later.
POSITION_WRITES_PER_SECOND = 5.0
POSITION_WRITES_BURST = 10.0
# A change that cannot open a slot (a status write, a progress patch) is coalesced with the others
# of this window into one scheduling pass; a freed slot is refilled at once.
SCHEDULE_COALESCE_SECONDS = 0.25
SCHEDULE_MIN_INTERVAL_SECONDS = 0.01


def utc_now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(body: Mapping[str, Any]) -> Key:
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace") or "default"), str(metadata.get("name")))


def version_of(body: Mapping[str, Any]) -> int | None:
    value = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except ValueError:
        return None


def sequenced_of(key: Key, crawljob: Mapping[str, Any], waiting: bool) -> queue.Sequenced:
    source = (crawljob.get("spec") or {}).get("source") or {}
    return queue.Sequenced(
        f"{key[0]}/{key[1]}",
        (key[0], str(source.get("bucket") or ""), str(source.get("key") or "")),
        str(source.get("sequencer") or ""),
        waiting,
    )


def job_finished(job: Mapping[str, Any]) -> bool:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return True
    return False


@dataclass
class State:
    """The operator's view of the cluster and its collaborators; lives in kopf's memo."""

    settings: OperatorSettings
    client: kube.KubeClient
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    crawljobs: dict[Key, Body] = field(default_factory=dict)
    jobs: dict[Key, Body] = field(default_factory=dict)
    pods: dict[Key, Body] = field(default_factory=dict)
    pods_by_job: defaultdict[Key, set[Key]] = field(default_factory=lambda: defaultdict(set))
    creating: set[Key] = field(default_factory=set)
    locks: defaultdict[Key, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)
    free_slots: int = 0
    admitted: asyncio.Queue[Key] = field(default_factory=asyncio.Queue)
    queued_writes: set[Key] = field(default_factory=set)  # Queued/Superseded writes in flight
    newest: dict[tuple[str, str, str], Key] = field(default_factory=dict)  # object → newest event's CrawlJob
    # Indexes over crawljobs for the scheduling pass (it re-checks each key against crawljobs):
    open_keys: set[Key] = field(default_factory=set)  # not in a terminal phase
    sequenced_keys: set[Key] = field(default_factory=set)  # spec.source.sequencer set
    position_written: dict[Key, float] = field(default_factory=dict)
    position_budget: queue.Budget = field(
        default_factory=lambda: queue.Budget(POSITION_WRITES_PER_SECOND, POSITION_WRITES_BURST)
    )
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    instance: str = field(default_factory=socket.gethostname)
    healthy_at: float = 0.0

    def __post_init__(self) -> None:
        self.metrics.phase_counts = self.phase_counts

    def phase_counts(self) -> dict[str, int]:
        """CrawlJobs in view by phase ("New" before the operator wrote one)."""
        counts: dict[str, int] = defaultdict(int)
        for crawljob in list(self.crawljobs.values()):
            counts[str((crawljob.get("status") or {}).get("phase") or "New")] += 1
        return counts

    def remember(self, store: dict[Key, Body], body: Mapping[str, Any]) -> None:
        """Keep the newest version of *body* (watch events may arrive after a newer write answer)."""
        key = key_of(body)
        known = store.get(key)
        new, old = version_of(body), version_of(known or {})
        if known is not None and new is not None and old is not None and new < old:
            return
        store[key] = copy.deepcopy(dict(body))
        if store is self.crawljobs:
            if (body.get("status") or {}).get("phase") in resource.TERMINAL_PHASES:
                self.open_keys.discard(key)
            else:
                self.open_keys.add(key)
            if ((body.get("spec") or {}).get("source") or {}).get("sequencer"):
                self.sequenced_keys.add(key)

    def kick(self, urgent: bool = False) -> None:
        """Ask for a scheduling pass: at once when *urgent* (a slot may be free), else coalesced."""
        self.wake.set()
        if urgent:
            self.slot_freed.set()

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def remember_pod(self, body: Mapping[str, Any]) -> None:
        self.remember(self.pods, body)
        job_name = ((body.get("metadata") or {}).get("labels") or {}).get("job-name")
        if job_name:
            self.pods_by_job[(key_of(body)[0], str(job_name))].add(key_of(body))

    def forget_pod(self, key: Key) -> None:
        body = self.pods.pop(key, None) or {}
        job_name = ((body.get("metadata") or {}).get("labels") or {}).get("job-name")
        if job_name:
            self.pods_by_job[(key[0], str(job_name))].discard(key)

    def pods_of(self, namespace: str, job_name: str) -> list[Body]:
        keys = self.pods_by_job.get((namespace, job_name)) or set()
        return [self.pods[key] for key in keys if key in self.pods]

    def jobs_of(self, namespace: str, crawljob_name: str) -> list[Body]:
        return [
            job
            for (job_namespace, _), job in self.jobs.items()
            if job_namespace == namespace
            and ((job.get("metadata") or {}).get("labels") or {}).get(resource.LABEL_CRAWLJOB)
            == crawljob_name
        ]


def get_state(memo: Any) -> State:
    state: State = memo["crawljob"]
    return state


async def post_event(
    state: State, crawljob: Mapping[str, Any], reason: str, message: str, warning: bool
) -> None:
    """A Kubernetes Event on the CrawlJob (best effort: failures are logged, never raised)."""
    metadata = crawljob.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{metadata.get('name')}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "name": metadata.get("name"),
            "namespace": namespace,
            "uid": metadata.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "firstTimestamp": now[:19] + "Z",
        "lastTimestamp": now[:19] + "Z",
        "eventTime": now,
        "count": 1,
        "action": "Reconcile",
        "source": {"component": resource.MANAGED_BY},
        "reportingComponent": resource.MANAGED_BY,
        "reportingInstance": state.instance,
    }
    try:
        await state.client.create(kube.EVENTS, namespace, event)
    except kube.KubeError as exc:
        state.metrics.api_errors.labels("event").inc()
        log.warning("cannot post event %s on %s: %s", reason, metadata.get("name"), exc)


async def sync_labels(state: State, crawljob: Body) -> Body:
    """Bring the crawljob.io/phase and crawljob.io/bucket labels in line with *crawljob* (one
    metadata patch when the phase changed; best effort: the status already says it)."""
    labels = resource.labels_patch(crawljob)
    if not labels:
        return crawljob
    namespace, name = key_of(crawljob)
    try:
        return await state.client.patch(kube.CRAWLJOBS, namespace, name, {"metadata": {"labels": labels}})
    except kube.KubeError as exc:
        state.metrics.api_errors.labels("labels").inc()
        log.warning("cannot update the labels of %s: %s", name, exc)
        return crawljob


async def write_status(
    state: State, crawljob: Body, observation: status.Observation, job_name: str | None
) -> Body:
    """Patch the CrawlJob's status to match *observation*; post an Event when the phase or reason changes."""
    current = crawljob.get("status") or {}
    metadata = crawljob.get("metadata") or {}
    generation = metadata.get("generation")
    desired = status.desired_status(current, observation, generation, job_name, utc_now())
    patch = status.status_patch(current, desired)
    if not status.worth_writing(patch, current):
        return crawljob
    namespace, name = key_of(crawljob)
    try:
        updated = await state.client.patch(kube.CRAWLJOBS, namespace, name, {"status": patch}, "status")
    except kube.NotFound:
        return crawljob
    except kube.KubeError as exc:
        state.metrics.api_errors.labels("status").inc()
        raise kopf.TemporaryError(f"cannot update the status of {name}: {exc}", delay=2) from exc
    if updated.get("metadata"):
        updated = await sync_labels(state, updated)
        state.remember(state.crawljobs, updated)
    transitioned = current.get("phase") != observation.phase or current.get("reason") != observation.reason
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
            started = gc.parse_time(observation.start_time)
            finished = gc.parse_time(observation.completion_time)
            if started and finished:
                state.metrics.duration.labels(observation.phase).observe((finished - started).total_seconds())
        await post_event(
            state,
            crawljob,
            observation.reason,
            f"{observation.phase}: {observation.message}",
            observation.warning,
        )
    return updated if updated.get("metadata") else crawljob
