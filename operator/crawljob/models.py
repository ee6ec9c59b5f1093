"""Typed views of the Kubernetes objects the programs read: CrawlJob, Job, Pod (pure: no I/O).

A body is parsed once, where it enters (a watch event, a list, a write's answer); decision code
reads these fields instead of walking dicts. `body` keeps the object as the API sent it, for what
is written back or rendered from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crawljob import resource

Body = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
# Set by the Job controller on each Pod of an Indexed Job.
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _integer(value: Any, default: int | None = None) -> int | None:
    if isinstance(value, bool):
        return default
    try:
        return int(str(value))
    except ValueError:
        return default


@dataclass(frozen=True)
class Meta:
    """The metadata fields the programs read."""

    namespace: str
    name: str
    uid: str = ""
    generation: int | None = None
    resource_version: int | None = None
    creation_timestamp: str = ""
    deletion_timestamp: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner_uids: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Meta:
        metadata = _mapping(body.get("metadata"))
        return cls(
            namespace=str(metadata.get("namespace") or "default"),
            name=str(metadata.get("name")),
            uid=str(metadata.get("uid") or ""),
            generation=_integer(metadata.get("generation")),
            resource_version=_integer(metadata.get("resourceVersion")),
            creation_timestamp=str(metadata.get("creationTimestamp") or ""),
            deletion_timestamp=_text(metadata.get("deletionTimestamp")),
            labels={str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()},
            annotations={str(k): str(v) for k, v in _mapping(metadata.get("annotations")).items()},
            owner_uids=tuple(
                str(_mapping(ref).get("uid"))
                for ref in metadata.get("ownerReferences") or ()
                if _mapping(ref)
            ),
        )


def key_of(body: Mapping[str, Any]) -> Key:
    """(namespace, name) of an object body."""
    metadata = _mapping(body.get("metadata"))
    return (str(metadata.get("namespace") or "default"), str(metadata.get("name")))


@dataclass(frozen=True)
class Source:
    """spec.source: the S3 object version a CrawlJob processes."""

    bucket: str = ""
    key: str = ""
    version_id: str | None = None
    sequencer: str = ""
    event_time: str | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> Source:
        source = _mapping(spec.get("source"))
        return cls(
            bucket=str(source.get("bucket") or ""),
            key=str(source.get("key") or ""),
            version_id=_text(source.get("versionId")),
            sequencer=str(source.get("sequencer") or ""),
            event_time=_text(source.get("eventTime")),
        )


@dataclass(frozen=True)
class CrawlJobStatus:
    """The status fields the operator decides on (the whole status stays in CrawlJob.body)."""

    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    job_name: str | None = None
    run: int = 1
    attempts: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    rerun_token: str | None = None
    cancel_token: str | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in resource.TERMINAL_PHASES

    @classmethod
    def parse(cls, status: Mapping[str, Any]) -> CrawlJobStatus:
        return cls(
            phase=_text(status.get("phase")),
            reason=_text(status.get("reason")),
            message=_text(status.get("message")),
            job_name=_text(status.get("jobName")),
            run=max(1, _integer(status.get("run"), 1) or 1),
            attempts=max(0, _integer(status.get("attempts"), 0) or 0),
            start_time=_text(status.get("startTime")),
            completion_time=_text(status.get("completionTime")),
            rerun_token=_text(status.get("rerunToken")),
            cancel_token=status.get("cancelToken") if isinstance(status.get("cancelToken"), str) else None,
        )


@dataclass(frozen=True)
class CrawlJob:
    """A CrawlJob as the operator reads it."""

    meta: Meta
    source: Source
    status: CrawlJobStatus
    body: Body

    @property
    def key(self) -> Key:
        return self.meta.key

    @property
    def raw_status(self) -> Mapping[str, Any]:
        return _mapping(self.body.get("status"))

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> CrawlJob:
        return cls(
            Meta.parse(body),
            Source.parse(_mapping(body.get("spec"))),
            CrawlJobStatus.parse(_mapping(body.get("status"))),
            dict(body),
        )


@dataclass(frozen=True)
class Condition:
    """One entry of status.conditions."""

    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> Condition:
        return cls(
            type=str(item.get("type") or ""),
            status=str(item.get("status") or ""),
            reason=_text(item.get("reason")),
            message=_text(item.get("message")),
            last_transition_time=_text(item.get("lastTransitionTime")),
        )


@dataclass(frozen=True)
class JobStatus:
    """The Job fields the operator's status rules read (spec limits and status)."""

    conditions: tuple[Condition, ...] = ()
    start_time: str | None = None
    completion_time: str | None = None
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    backoff_limit: int | None = None
    # The crawl's deadline: a per-shard run's Job has what is left of it as its activeDeadlineSeconds
    # and the whole one on the annotation crawljob.io/deadline.
    active_deadline_seconds: int | None = None
    # Exit codes the Job's podFailurePolicy fails the whole Job for (FailJob, operator In): such a
    # pod failure is never retried. Empty on servers older than podFailurePolicy (they drop it).
    fail_job_exit_codes: frozenset[int] = frozenset()
    completions: int = 1
    indexed: bool = False  # completionMode: Indexed (one completion per shard)

    def true_condition(self, *types: str) -> Condition | None:
        """The first of *types* present with status "True" (in the order given), or None."""
        for type_ in types:
            found = next((item for item in self.conditions if item.type == type_), None)
            if found is not None and found.status == "True":
                return found
        return None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> JobStatus:
        status, spec = _mapping(body.get("status")), _mapping(body.get("spec"))
        return cls(
            conditions=tuple(Condition.parse(_mapping(item)) for item in status.get("conditions") or ()),
            start_time=_text(status.get("startTime")),
            completion_time=_text(status.get("completionTime")),
            active=_integer(status.get("active"), 0) or 0,
            succeeded=_integer(status.get("succeeded"), 0) or 0,
            failed=_integer(status.get("failed"), 0) or 0,
            backoff_limit=_integer(spec.get("backoffLimit")),
            active_deadline_seconds=_integer(
                _mapping(_mapping(body.get("metadata")).get("annotations")).get(resource.ANNOTATION_DEADLINE)
                or spec.get("activeDeadlineSeconds")
            ),
            fail_job_exit_codes=_fail_job_exit_codes(_mapping(spec.get("podFailurePolicy"))),
            completions=_integer(spec.get("completions"), 1) or 1,
            indexed=spec.get("completionMode") == "Indexed",
        )


def _fail_job_exit_codes(policy: Mapping[str, Any]) -> frozenset[int]:
    codes: set[int] = set()
    for rule in policy.get("rules") or ():
        on_exit = _mapping(_mapping(rule).get("onExitCodes"))
        if _mapping(rule).get("action") == "FailJob" and on_exit.get("operator") == "In":
            codes.update(
                code
                for code in (_integer(value) for value in on_exit.get("values") or ())
                if code is not None
            )
    return frozenset(codes)


@dataclass(frozen=True)
class Terminated:
    """A container's terminated state."""

    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class Container:
    """The worker container's state in a Pod's status."""

    waiting_reason: str | None = None
    waiting_message: str | None = None
    running: bool = False
    terminated: Terminated | None = None

    @classmethod
    def parse(cls, status: Mapping[str, Any]) -> Container:
        statuses = [_mapping(item) for item in status.get("containerStatuses") or ()]
        chosen = next((item for item in statuses if item.get("name") == resource.WORKER_CONTAINER), None)
        state = _mapping((chosen if chosen is not None else statuses[0] if statuses else {}).get("state"))
        waiting, ended = _mapping(state.get("waiting")), state.get("terminated")
        terminated = None
        if isinstance(ended, Mapping):
            terminated = Terminated(
                exit_code=_integer(ended.get("exitCode")),
                reason=_text(ended.get("reason")),
                message=ended.get("message") if isinstance(ended.get("message"), str) else None,
                finished_at=_text(ended.get("finishedAt")),
            )
        return cls(
            waiting_reason=_text(waiting.get("reason")),
            waiting_message=_text(waiting.get("message")),
            running=bool(state.get("running")),
            terminated=terminated,
        )


@dataclass(frozen=True)
class PodStatus:
    """The Pod fields the operator's status rules read."""

    name: str = ""
    creation_timestamp: str = ""
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    worker: Container = field(default_factory=Container)
    completion_index: int | None = None  # the pod of an Indexed Job: its index (= shard)

    @property
    def exit_code(self) -> int | None:
        """The worker's exit code, None while it has not terminated."""
        return self.worker.terminated.exit_code if self.worker.terminated is not None else None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> PodStatus:
        metadata, status = _mapping(body.get("metadata")), _mapping(body.get("status"))
        return cls(
            name=str(metadata.get("name") or ""),
            creation_timestamp=str(metadata.get("creationTimestamp") or ""),
            phase=_text(status.get("phase")),
            reason=_text(status.get("reason")),
            message=_text(status.get("message")),
            worker=Container.parse(status),
            completion_index=_integer(
                _mapping(metadata.get("annotations")).get(COMPLETION_INDEX_ANNOTATION) or "-", None
            ),
        )


@dataclass(frozen=True)
class Job:
    """A batch/v1 Job of ours: whose it is (label, owner) and what its status says."""

    meta: Meta
    status: JobStatus
    body: Body

    @property
    def key(self) -> Key:
        return self.meta.key

    @property
    def crawljob(self) -> str | None:
        """The name of its CrawlJob (label), if it has one."""
        return self.meta.labels.get(resource.LABEL_CRAWLJOB)

    @property
    def run(self) -> int:
        """Which run of its CrawlJob it belongs to (annotation; 1 when absent)."""
        return max(1, _integer(self.meta.annotations.get(resource.ANNOTATION_RUN), 1) or 1)

    @property
    def shard(self) -> int | None:
        """The shard of a per-shard run's Job (label), None for a run's only Job."""
        return _integer(self.meta.labels.get(resource.LABEL_SHARD) or "-", None)

    @property
    def shards(self) -> int | None:
        """How many shards the per-shard run of this Job has (annotation), None for a run's only Job."""
        return _integer(self.meta.annotations.get(resource.ANNOTATION_SHARDS) or "-", None)

    def is_owned_by(self, owner_uid: str) -> bool:
        return owner_uid in self.meta.owner_uids

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Job:
        return cls(Meta.parse(body), JobStatus.parse(body), dict(body))


@dataclass(frozen=True)
class Pod:
    """A worker Pod: which Job it belongs to and what its status says."""

    meta: Meta
    status: PodStatus
    body: Body

    @property
    def key(self) -> Key:
        return self.meta.key

    @property
    def job_name(self) -> str | None:
        return self.meta.labels.get("job-name")

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Pod:
        return cls(Meta.parse(body), PodStatus.parse(body), dict(body))
