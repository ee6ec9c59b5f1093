"""CrawlJob + OperatorSettings → the batch/v1 Job that runs the worker (pure: no I/O)."""

from __future__ import annotations

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
        return "Indexed Jobs" if self.indexed else "no Indexed Jobs (one pod per CrawlJob)"


def features_of(version: Mapping[str, Any]) -> JobFeatures:
    """JobFeatures from the answer of GET /version (`major`, `minor` such as "29+"); unknown: none."""
    try:
        major = int(re.sub(r"\D", "", str(version.get("major") or "")))
        minor = int(re.sub(r"\D.*", "", str(version.get("minor") or "")))
    except ValueError:
        return JobFeatures(indexed=False)
    release = (major, minor)
    return JobFeatures(indexed=release >= (1, 24), backoff_limit_per_index=release >= (1, 29))


def shard_count(spec: Mapping[str, Any], settings: OperatorSettings) -> int:
    """How many shards a CrawlJob runs: spec.shards, else ceil(spec.source.size / spec.shardSizeMb MiB)
    (the size comes from the S3 event; without it, one shard), capped by --max-shards."""
    shards = spec.get("shards")
    size_mb = spec.get("shardSizeMb")
    size = (spec.get("source") or {}).get("size")
    if isinstance(shards, int) and shards > 1:
        wanted = shards
    elif isinstance(size_mb, int | float) and size_mb > 0 and isinstance(size, int) and size > 0:
        wanted = math.ceil(size / (size_mb * MIB))
    else:
        wanted = 1
    return max(1, min(wanted, settings.max_shards))


def job_name(crawljob_name: str, run: int) -> str:
    """The Job of the *run*-th run of a CrawlJob: its own name first, then `<name>-r<run>` on re-runs."""
    return crawljob_name if run <= 1 else f"{crawljob_name}-r{run}"


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
    CrawlJob is an Indexed Job (one completion per shard) where the server has them, else one pod."""
    features = features or JobFeatures()
    metadata = crawljob["metadata"]
    name = str(metadata["name"])
    spec = crawljob.get("spec") or {}
    template = spec.get("jobTemplate") or {}
    run = CrawlJobStatus.parse(crawljob.get("status") or {}).run
    labels = _labels(name)
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
        "args": worker_args(
            spec, name, settings, run_id(crawljob)
        ),  # --shards N is added below for an Indexed Job
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
    deadline = spec.get("activeDeadlineSeconds") or settings.active_deadline_seconds
    if deadline:
        job_spec["activeDeadlineSeconds"] = int(deadline)
    if settings.job_ttl_seconds is not None:
        job_spec["ttlSecondsAfterFinished"] = int(settings.job_ttl_seconds)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, run),
            "namespace": metadata.get("namespace"),
            "labels": labels,
            "annotations": {resource.ANNOTATION_RUN: str(run)},
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
