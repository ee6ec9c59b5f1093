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
from crawljob.models import Body, CrawlJob, Job, Key, Meta, Pod, PodStatus
from crawljob.operator import queue
from crawljob.operator.jobs import JobFeatures
from crawljob.operator.metrics import OperatorMetrics
from crawljob.operator.settings import OperatorSettings

log = logging.getLogger("crawljob.operator")

MANAGED = {resource.LABEL_MANAGED_BY: resource.MANAGED_BY}


class RetryLater(Exception):
    """A step failed on an API error and was abandoned; the next watch event or the periodic resync
    retries it. (Not kopf.TemporaryError: kopf neither tracks nor retries `on.event` handlers.)"""


def _newer(known: CrawlJob | Job | Pod | None, new: Meta) -> bool:
    """Whether *new* may replace *known* (watch events may arrive after a newer write answer)."""
    if known is None or new.resource_version is None or known.meta.resource_version is None:
        return True
    return new.resource_version >= known.meta.resource_version


@dataclass
class State:
    """The operator's view of the cluster and its collaborators; lives in kopf's memo."""

    settings: OperatorSettings
    client: kube.KubeClient
    job_features: JobFeatures = field(default_factory=JobFeatures)  # from the server's version at start
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    crawljobs: dict[Key, CrawlJob] = field(default_factory=dict)
    jobs: dict[Key, Job] = field(default_factory=dict)
    pods: dict[Key, Pod] = field(default_factory=dict)
    pods_by_job: defaultdict[Key, set[Key]] = field(default_factory=lambda: defaultdict(set))
    # CrawlJob → every per-shard Job of it this process has seen (gone ones too: a shard Job seen
    # and gone while its run is unfinished was deleted behind the operator's back).
    shard_jobs_seen: defaultdict[Key, set[Key]] = field(default_factory=lambda: defaultdict(set))
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
    # CrawlSource bodies (kept by sweeper.on_crawlsource_event; swept by sweeper.Sweeper) and their changes.
    sources: dict[Key, Body] = field(default_factory=dict)
    sources_changed: asyncio.Event = field(default_factory=asyncio.Event)
    instance: str = field(default_factory=socket.gethostname)
    healthy_at: float = 0.0

    def __post_init__(self) -> None:
        self.metrics.phase_counts = self.phase_counts

    def phase_counts(self) -> dict[str, int]:
        """CrawlJobs in view by phase ("New" before the operator wrote one), for the phase gauge."""
        counts: dict[str, int] = defaultdict(int)
        for crawljob in list(self.crawljobs.values()):
            counts[crawljob.status.phase or "New"] += 1
        return counts

    def remember_crawljob(self, body: Mapping[str, Any]) -> CrawlJob:
        """Keep the newest version of a CrawlJob body; the one kept is returned."""
        crawljob = CrawlJob.parse(copy.deepcopy(dict(body)))
        known = self.crawljobs.get(crawljob.key)
        if not _newer(known, crawljob.meta):
            assert known is not None
            return known
        self.crawljobs[crawljob.key] = crawljob
        if crawljob.status.terminal:
            self.open_keys.discard(crawljob.key)
        else:
            self.open_keys.add(crawljob.key)
        if crawljob.source.sequencer:
            self.sequenced_keys.add(crawljob.key)
        return crawljob

    def remember_job(self, body: Mapping[str, Any]) -> Job:
        """Keep the newest version of a Job body; the one kept is returned."""
        job = Job.parse(copy.deepcopy(dict(body)))
        known = self.jobs.get(job.key)
        if not _newer(known, job.meta):
            assert known is not None
            return known
        self.jobs[job.key] = job
        if job.shard is not None and job.crawljob:
            self.shard_jobs_seen[(job.meta.namespace, job.crawljob)].add(job.key)
        return job

    def note_newest(self, crawljob: CrawlJob) -> None:
        """Keep `newest` current between scheduling passes (Job creation checks it)."""
        item = queue.sequenced_of(crawljob, False)
        if not item.sequencer.strip():
            return
        known_key = self.newest.get(item.obj)
        known = self.crawljobs.get(known_key) if known_key else None
        if known is None or queue.compare_sequencers(item.sequencer, known.source.sequencer) > 0:
            self.newest[item.obj] = crawljob.key

    def kick(self, urgent: bool = False) -> None:
        """Ask for a scheduling pass: at once when *urgent* (a slot may be free), else coalesced."""
        self.wake.set()
        if urgent:
            self.slot_freed.set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run *coroutine* in the background; cancelled at cleanup."""
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished background task; log its exception (it concerned one object only)."""
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def remember_pod(self, body: Mapping[str, Any]) -> None:
        pod = Pod.parse(copy.deepcopy(dict(body)))
        if not _newer(self.pods.get(pod.key), pod.meta):
            return
        self.pods[pod.key] = pod
        if pod.job_name:
            self.pods_by_job[(pod.meta.namespace, pod.job_name)].add(pod.key)

    def forget_pod(self, key: Key) -> None:
        pod = self.pods.pop(key, None)
        if pod is not None and pod.job_name:
            self.pods_by_job[(key[0], pod.job_name)].discard(key)

    def pods_of(self, namespace: str, job_name: str) -> list[PodStatus]:
        """What the Pods of one Job say (for the status rules)."""
        keys = self.pods_by_job.get((namespace, job_name)) or set()
        return [self.pods[key].status for key in keys if key in self.pods]

    def shard_jobs_of(self, namespace: str, crawljob_name: str) -> list[Job]:
        """The per-shard Jobs of a CrawlJob in view (any run, any owner)."""
        seen = self.shard_jobs_seen.get((namespace, crawljob_name)) or set()
        return [self.jobs[key] for key in sorted(seen) if key in self.jobs]

    def jobs_of(self, namespace: str, crawljob_name: str) -> list[Job]:
        return [
            job
            for job in self.jobs.values()
            if job.meta.namespace == namespace and job.crawljob == crawljob_name
        ]


def get_state(memo: Any) -> State:
    state: State = memo["crawljob"]
    return state
