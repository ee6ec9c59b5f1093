"""The operator's view of the cluster: the CrawlJobs, Jobs and Pods it has seen (an informer-cache-like
`State`, kept in kopf's memo) with its indexes and the collaborators every path needs."""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
from collections import defaultdict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from crawljob import kube, resource
from crawljob.operator import queue
from crawljob.operator.metrics import OperatorMetrics
from crawljob.operator.settings import OperatorSettings

log = logging.getLogger("crawljob.operator")

Body = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

MANAGED = {resource.LABEL_MANAGED_BY: resource.MANAGED_BY}


class RetryLater(Exception):
    """A step failed on an API error and was abandoned; the next watch event or the periodic resync
    retries it. (Not kopf.TemporaryError: kopf neither tracks nor retries `on.event` handlers.)"""


def key_of(body: Mapping[str, Any]) -> Key:
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace") or "default"), str(metadata.get("name")))


def version_of(body: Mapping[str, Any]) -> int | None:
    value = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except ValueError:
        return None


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
        default_factory=lambda: queue.Budget(queue.POSITION_WRITES_PER_SECOND, queue.POSITION_WRITES_BURST)
    )
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    instance: str = field(default_factory=socket.gethostname)
    healthy_at: float = 0.0

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

    def note_newest(self, key: Key, crawljob: Mapping[str, Any]) -> None:
        """Keep `newest` current between scheduling passes (Job creation checks it)."""
        item = queue.sequenced_of(key, crawljob, False)
        if not item.sequencer.strip():
            return
        known_key = self.newest.get(item.obj)
        known = self.crawljobs.get(known_key) if known_key else None
        if (
            known is None
            or queue.compare_sequencers(item.sequencer, queue.sequenced_of(key, known, False).sequencer) > 0
        ):
            self.newest[item.obj] = key

    def kick(self, urgent: bool = False) -> None:
        """Ask for a scheduling pass: at once when *urgent* (a slot may be free), else coalesced."""
        self.wake.set()
        if urgent:
            self.slot_freed.set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run *coroutine* in the background; cancelled at cleanup."""
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
