"""CrawlJob + OperatorSettings → the batch/v1 Job that runs the worker (pure: no I/O)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crawljob import resource
from crawljob.models import Body, CrawlJobStatus
from crawljob.operator.settings import OperatorSettings
from crawljob_worker import contract

DEFAULT_POD_SECURITY_CONTEXT: Mapping[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: Mapping[str, Any] = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


MIB = 1024 * 1024


@dataclass(frozen=True)
class JobFeatures:
    """What the API server's Job controller supports, from its version (`features_of`)."""

    indexed: bool = True  # completionMode: Indexed, GA in 1.24
    backoff_limit_per_index: bool = False  # GA in 1.33, beta (on by default) from 1.29

    def describe(self) -> str:
        return (
            "Indexed Jobs" if self.indexed else "no Indexed Jobs (a sharded CrawlJob runs one Job per shard)"
        )


def features_of(version: Mapping[str, Any]) -> JobFeatures:
    """JobFeatures from the answer of GET /version (`major`, `minor` such as "29+"); unknown: none."""
    try:
        major = int(re.sub(r"\D", "", str(version.get("major") or "")))
        minor = int(re.sub(r"\D.*", "", str(version.get("minor") or "")))
    except ValueError:
        return JobFeatures(indexed=False)
    release = (major, minor)
    return JobFeatures(indexed=release >= (1, 24), backoff_limit_per_index=release >= (1, 29))


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def requested_shards(spec: Mapping[str, Any]) -> int | None:
    """The shards a spec asks for, before any cap: spec.shards when set (it takes precedence), else
    ceil(spec.source.size / spec.shardSizeMb MiB) (the size comes from the S3 event), else 1. None
    when spec.shardSizeMb is set and the object's size is unknown: the crawl runs as one shard."""
    shards = _integer(spec.get("shards"))
    if shards is not None:
        return shards
    size_mb = _integer(spec.get("shardSizeMb"))
    if size_mb is None or size_mb <= 0:
        return 1
    size = _integer((spec.get("source") or {}).get("size"))
    return None if size is None else math.ceil(size / (size_mb * MIB))


def shard_count(spec: Mapping[str, Any], settings: OperatorSettings) -> int:
    """How many shards a CrawlJob runs: `requested_shards` (one when it cannot tell), capped by
    --max-shards (and by MAX_SHARD_INDEXES, the Indexed Job's own limit)."""
    wanted = requested_shards(spec) or 1
    return max(1, min(wanted, settings.max_shards, MAX_SHARD_INDEXES))


def unknown_size(spec: Mapping[str, Any]) -> str | None:
    """Why spec.shardSizeMb cannot take effect (the object's size is unknown, so the crawl runs as
    one shard), or None: said as a Warning Event, since a field that silently does nothing misleads."""
    if requested_shards(spec) is not None:
        return None
    return (
        f"spec.shardSizeMb is {spec.get('shardSizeMb')} but the object's size is unknown (its event "
        "carried none and spec.source.size is not set): it runs as one shard; set spec.shards, or "
        "spec.source.size"
    )


def job_name(crawljob_name: str, run: int) -> str:
    """The Job of the *run*-th run of a CrawlJob: its own name first, then `<name>-r<run>` on re-runs."""
    return crawljob_name if run <= 1 else f"{crawljob_name}-r{run}"


# Per-shard Jobs are `<stem>-s<index>`, stem = `<name, cut>-<digest of (name, run)>`. Pods carry the
# Job's name as the `job-name` label (at most 63 characters), so the name cut leaves room for the
# digest and a shard index below MAX_SHARD_INDEXES (the Indexed Job's own limit of completions).
LABEL_VALUE_LIMIT = 63
SHARD_DIGEST_LENGTH = 10
MAX_SHARD_INDEXES = contract.MAX_SHARDS
_SHARD_SUFFIX_LIMIT = len("-s") + len(str(MAX_SHARD_INDEXES - 1))
_STEM_PREFIX_LIMIT = LABEL_VALUE_LIMIT - _SHARD_SUFFIX_LIMIT - 1 - SHARD_DIGEST_LENGTH


def shard_job_stem(crawljob_name: str, run: int) -> str:
    """The common part of the names of a per-shard run's Jobs (status.jobName of such a run).

    Deterministic per (CrawlJob, run); the digest covers the whole name and the run, so two CrawlJobs
    sharing a long prefix, or two runs of one, never share a stem, and no Job the operator names
    after a CrawlJob (`<name>`, `<name>-r<run>`) ends like a shard Job (`-<10 chars>-s<digits>`)
    unless a CrawlJob is deliberately named so (then the owner check refuses the Job).
    """
    raw = hashlib.sha256(f"{crawljob_name}\0{run}".encode("utf-8", "surrogatepass")).digest()
    digest = base64.b32encode(raw).decode("ascii").lower()[:SHARD_DIGEST_LENGTH]
    prefix = crawljob_name[:_STEM_PREFIX_LIMIT].rstrip("-.")
    return f"{prefix}-{digest}" if prefix else digest


def shard_job_name(crawljob_name: str, run: int, index: int) -> str:
    """The Job of shard *index* of the *run*-th run of a CrawlJob, on a server without Indexed Jobs."""
    if not 0 <= index < MAX_SHARD_INDEXES:
        raise ValueError(f"shard index {index} is outside 0..{MAX_SHARD_INDEXES - 1}")
    return f"{shard_job_stem(crawljob_name, run)}-s{index}"


def per_shard_jobs(spec: Mapping[str, Any], settings: OperatorSettings, features: JobFeatures) -> int:
    """How many Jobs a new run of this spec makes, one per shard: shard_count() on a server without
    Indexed Jobs, else 0 (the run is one Job, Indexed when sharded)."""
    if features.indexed:
        return 0
    shards = shard_count(spec, settings)
    return shards if shards > 1 else 0


def shards_to_start(shards: int, unfinished: Mapping[int, bool], parallelism: int) -> list[int]:
    """Which shard Jobs to create now: the lowest indexes not made yet, so that at most *parallelism*
    are unfinished (*unfinished*: index → whether that shard's Job is still unfinished)."""
    room = parallelism - sum(1 for running in unfinished.values() if running)
    missing = [index for index in range(shards) if index not in unfinished]
    return missing[: max(0, room)]


def crawl_deadline(spec: Mapping[str, Any], settings: OperatorSettings) -> int | None:
    """The crawl's wall-clock limit in seconds (spec.activeDeadlineSeconds, else the operator's
    --active-deadline-seconds), or None for none."""
    deadline = spec.get("activeDeadlineSeconds") or settings.active_deadline_seconds
    return int(deadline) if deadline else None


def deadline_left(
    deadline: int | None, started: datetime.datetime | None, now: datetime.datetime
) -> int | None:
    """Whole seconds left of a per-shard run's *deadline*, counted from its first shard Job's
    creation (*started*; None: nothing made yet, the whole deadline). 0 once it has passed. None
    without a deadline. Rounded down, so the run ends at the deadline or up to a second before it."""
    if deadline is None:
        return None
    if started is None:
        return deadline
    elapsed = max(0.0, (now - started).total_seconds())  # a server clock ahead of ours: none elapsed
    return max(0, math.floor(deadline - elapsed))


def reported_shards(crawljob: Mapping[str, Any]) -> set[int]:
    """Shards of the current run whose worker reported progress (`status.progress.shards.<I>` with
    this run's id): their Job was made, so one missing now was deleted. This survives an operator
    restart, which the operator's memory of the Jobs it has seen does not."""
    status = crawljob.get("status")
    progress = status.get("progress") if isinstance(status, Mapping) else None
    entries = progress.get("shards") if isinstance(progress, Mapping) else None
    if not isinstance(entries, Mapping):
        return set()
    current = run_id(crawljob)
    return {
        int(key)
        for key, entry in entries.items()
        if isinstance(key, str)
        and key.isdigit()
        and isinstance(entry, Mapping)
        and entry.get("runId") == current
    }


def vanished_shards(shards: int, present: set[int], seen: set[int]) -> list[int]:
    """Shards whose Job existed and is gone: seen before, or below a shard whose Job exists (shard
    Jobs are made in index order, so a gap below an existing one was made and then deleted)."""
    highest = max(present, default=-1)
    return [index for index in range(shards) if index not in present and (index in seen or index < highest)]


def source_args(spec: Mapping[str, Any]) -> list[str]:
    """The object to process as two separate, uninterpreted values (never a URI: a `#`, `?`,
    `%`, tab or newline in a key is data). `--flag=value` keeps a key starting with `-` a value."""
    source = spec.get("source") or {}
    return [f"--source-bucket={source['bucket']}", f"--source-key={source['key']}"]


def output_uri(spec: Mapping[str, Any], name: str, settings: OperatorSettings) -> str:
    """Where the worker writes: spec.output.uri, else `<default>/<name>/`, else the source bucket."""
    explicit = (spec.get("output") or {}).get("uri")
    if explicit:
        return str(explicit)
    if settings.default_output_uri:
        return f"{settings.default_output_uri.rstrip('/')}/{name}/"
    return f"s3://{spec['source']['bucket']}/{resource.DEFAULT_OUTPUT_PREFIX}{name}/"


def run_id(crawljob: Mapping[str, Any]) -> str:
    """The id of the CrawlJob's current run, `<uid>-<run>`: the same for every shard (and every retry)
    of one run, new for each re-run, so a re-run's shards never count reports an earlier run left
    under the same output prefix (docs/worker.md, "Shards")."""
    run = CrawlJobStatus.parse(crawljob.get("status") or {}).run
    return f"{crawljob['metadata']['uid']}-{run}"


def worker_args(
    spec: Mapping[str, Any], name: str, settings: OperatorSettings, run: str | None = None
) -> list[str]:
    """Command-line arguments of the worker, per its CLI contract; *run* is the run id (`run_id`)."""
    args = [*source_args(spec), "--output", output_uri(spec, name, settings)]
    if run:
        args += ["--run-id", run]
    output_format = (spec.get("output") or {}).get("format")
    if output_format:
        args += ["--format", str(output_format)]
    csv = spec.get("csv") or {}
    if csv.get("delimiter"):
        args += ["--delimiter", str(csv["delimiter"])]
    if csv.get("header") is False:
        args.append("--no-header")
    if csv.get("encoding"):
        args += ["--encoding", str(csv["encoding"])]
    if csv.get("compression"):
        args += ["--compression", str(csv["compression"])]
    if csv.get("dtypes"):
        args += ["--dtypes", json.dumps(csv["dtypes"], sort_keys=True)]
    if spec.get("maxRejectRatio") is not None:
        args += ["--max-reject-ratio", str(spec["maxRejectRatio"])]
    version_id = (spec.get("source") or {}).get("versionId")
    if version_id:
        args += ["--version-id", str(version_id)]
    return args


def _labels(crawljob_name: str) -> dict[str, str]:
    return {
        resource.LABEL_NAME: "crawljob",
        resource.LABEL_MANAGED_BY: resource.MANAGED_BY,
        resource.LABEL_CRAWLJOB: crawljob_name,
    }


def build_job(
    crawljob: Mapping[str, Any], settings: OperatorSettings, features: JobFeatures | None = None
) -> Body:
    """The Job manifest for the current run of *crawljob* (which must have metadata.uid). A sharded
    CrawlJob is an Indexed Job (one completion per shard) where the server has them, else one pod
    (the operator then makes one Job per shard instead: build_shard_job)."""
    features = features or JobFeatures()
    metadata = crawljob["metadata"]
    name = str(metadata["name"])
    spec = crawljob.get("spec") or {}
    run = CrawlJobStatus.parse(crawljob.get("status") or {}).run
    job = _job(crawljob, settings, job_name(name, run), _labels(name), {resource.ANNOTATION_RUN: str(run)})
    job_spec, container = job["spec"], job["spec"]["template"]["spec"]["containers"][0]
    shards = shard_count(spec, settings) if features.indexed else 1
    if shards > 1:
        # The shard index reaches the worker as $JOB_COMPLETION_INDEX; Kubernetes retries a failed
        # index alone, and with backoffLimitPerIndex one shard's failures do not use up the others'.
        container["args"] = [*container["args"], "--shards", str(shards)]
        job_spec["completionMode"] = "Indexed"
        job_spec["completions"] = shards
        job_spec["parallelism"] = min(shards, settings.shard_parallelism)
        if features.backoff_limit_per_index:
            job_spec["backoffLimitPerIndex"] = job_spec["backoffLimit"]
            job_spec["backoffLimit"] = job_spec["backoffLimit"] * shards + shards
    if settings.job_ttl_seconds is not None:
        job_spec["ttlSecondsAfterFinished"] = int(settings.job_ttl_seconds)
    return job


def build_shard_job(
    crawljob: Mapping[str, Any],
    settings: OperatorSettings,
    index: int,
    shards: int,
    *,
    deadline: int | None = None,
) -> Body:
    """The Job of shard *index* of *shards* of the current run of *crawljob*, for a server without
    Indexed Jobs: one completion, the worker told its shard (`--shards N --shard-index I`), the
    shard on a label (Job and Pods) and the shard count on an annotation. *deadline*: the seconds
    left of the whole run's deadline (`deadline_left`), its activeDeadlineSeconds; the run's
    deadline is on the annotation `crawljob.io/deadline`.

    No ttlSecondsAfterFinished: a finished shard Job must stay while the other shards run, or it
    could not be told from one deleted behind the operator's back; the Jobs go with their CrawlJob
    (owner reference) or its next run."""
    if not 0 <= index < shards:
        raise ValueError(f"shard index {index} is outside 0..{shards - 1}")
    name = str(crawljob["metadata"]["name"])
    run = CrawlJobStatus.parse(crawljob.get("status") or {}).run
    labels = {**_labels(name), resource.LABEL_SHARD: str(index)}
    annotations = {resource.ANNOTATION_RUN: str(run), resource.ANNOTATION_SHARDS: str(shards)}
    whole = crawl_deadline(crawljob.get("spec") or {}, settings)
    if whole is not None:
        annotations[resource.ANNOTATION_DEADLINE] = str(whole)
    job = _job(crawljob, settings, shard_job_name(name, run, index), labels, annotations)
    if deadline is not None:
        if deadline < 1:
            raise ValueError(f"the run's deadline has passed: {deadline} s left")
        job["spec"]["activeDeadlineSeconds"] = deadline
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [*container["args"], "--shards", str(shards), "--shard-index", str(index)]
    return job


def _job(
    crawljob: Mapping[str, Any],
    settings: OperatorSettings,
    name_of_job: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
) -> Body:
    """A one-completion Job running the worker on the whole object (the callers add shards)."""
    metadata = crawljob["metadata"]
    name = str(metadata["name"])
    spec = crawljob.get("spec") or {}
    template = spec.get("jobTemplate") or {}
    env: list[dict[str, Any]] = [
        {"name": "CRAWLJOB_NAME", "value": name},
        {"name": "CRAWLJOB_NAMESPACE", "value": str(metadata.get("namespace") or "default")},
    ]
    env += [dict(item) for item in settings.worker_env]
    env += [dict(item) for item in template.get("env") or []]
    resources = dict(template.get("resources") or settings.worker_resources or {})
    container: Body = {
        "name": resource.WORKER_CONTAINER,
        "image": template.get("image") or settings.worker_image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(settings.worker_command),
        "args": worker_args(spec, name, settings, run_id(crawljob)),  # the callers add shards
        "env": env,
        "resources": resources,
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
        "terminationMessagePath": contract.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # The root filesystem is read-only; temporary files go to an emptyDir.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: Body = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": dict(settings.worker_security_context or DEFAULT_POD_SECURITY_CONTEXT),
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "automountServiceAccountToken": True,
    }
    service_account = template.get("serviceAccountName") or settings.worker_service_account
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if template.get("nodeSelector"):
        pod_spec["nodeSelector"] = dict(template["nodeSelector"])
    if template.get("tolerations"):
        pod_spec["tolerations"] = [dict(item) for item in template["tolerations"]]
    backoff_limit = spec.get("backoffLimit")
    job_spec: Body = {
        "backoffLimit": int(backoff_limit if backoff_limit is not None else settings.backoff_limit),
        "completions": 1,
        "parallelism": 1,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": resource.WORKER_CONTAINER,
                        "operator": "In",
                        "values": [int(code) for code in contract.PERMANENT_EXIT_CODES],
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    deadline = crawl_deadline(spec, settings)
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name_of_job,
            "namespace": metadata.get("namespace"),
            "labels": dict(labels),
            "annotations": dict(annotations),
            "ownerReferences": [owner_reference(crawljob)],
        },
        "spec": job_spec,
    }


def owner_reference(crawljob: Mapping[str, Any]) -> Body:
    """The controller owner reference pointing at *crawljob*."""
    metadata = crawljob["metadata"]
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
