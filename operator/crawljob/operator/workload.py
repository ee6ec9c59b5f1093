"""Reading a Job and its worker Pods (pure: no I/O): the Job's verdict, the worker container's
state, its termination message and why a Pod failed."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crawljob.models import Body, Condition, JobStatus, PodStatus
from crawljob_worker.contract import RESULT_KEYS, ExitCode

# Worker exit codes (crawljob_worker.contract) → reason and what it means for the user. The reason
# is the fallback when the termination message names none.
EXIT_CODES: Mapping[int, tuple[str, str]] = {
    ExitCode.INVALID_ARGUMENTS: (
        "InvalidArguments",
        "the worker rejected its arguments or configuration; fix the CrawlJob spec",
    ),
    ExitCode.BAD_INPUT: (
        "BadInput",
        "the source is not readable CSV (binary, undecodable or unsupported compression)",
    ),
    ExitCode.SOURCE_UNAVAILABLE: (
        "SourceNotFound",
        "the source object is missing or access to it was denied",
    ),
    ExitCode.REJECT_THRESHOLD_EXCEEDED: (
        "RejectThresholdExceeded",
        "more rows were rejected than maxRejectRatio allows (rejects were written)",
    ),
    ExitCode.OUTPUT_FORBIDDEN: ("OutputForbidden", "the worker cannot write to the output location"),
    ExitCode.TRANSIENT: ("Transient", "S3 was unreachable or throttled beyond the worker's retry budget"),
}
# Container waiting reasons that mean the worker cannot start as configured (Pod stays Pending).
STUCK_WAITING_REASONS: Mapping[str, str] = {
    "ErrImagePull": "the worker image cannot be pulled",
    "ImagePullBackOff": "the worker image cannot be pulled (backing off)",
    "InvalidImageName": "the worker image name is invalid",
    "ErrImageNeverPull": "the worker image is not on the node and its pull policy forbids pulling it",
    "CreateContainerConfigError": "the worker container's configuration is invalid (missing Secret/ConfigMap?)",
    "CreateContainerError": "the worker container cannot be created",
}
_INT_FIELDS = frozenset({"rowsRead", "rowsWritten", "rowsRejected", "bytesRead", "outputObjects"})


@dataclass(frozen=True)
class TerminationMessage:
    """The worker's JSON summary, parsed; *problem* says why it could not be used."""

    data: Body
    result: Body | None
    problem: str | None


def parse_termination_message(text: str | None) -> TerminationMessage:
    """Parse the worker's termination message; tolerate absent, truncated and invalid JSON."""
    if not text or not text.strip():
        return TerminationMessage({}, None, "the worker left no termination message")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        snippet = text.strip().replace("\n", " ")[:120]
        kind = "truncated" if text.strip().startswith("{") and not text.strip().endswith("}") else "invalid"
        return TerminationMessage(
            {}, None, f"the worker's termination message is {kind} JSON ({exc.msg}): {snippet!r}"
        )
    if not isinstance(data, dict):
        return TerminationMessage(
            {}, None, f"the worker's termination message is not a JSON object: {text[:120]!r}"
        )
    result: Body = {}
    for name in RESULT_KEYS:
        value = data.get(name)
        if value is None:
            continue
        if name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            result[name] = int(value)
        elif name == "durationSeconds":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                result[name] = round(float(value), 3)
        else:
            result[name] = str(value)
    return TerminationMessage(data, result, None)


# The Job controller's verdict: the terminal conditions, and (Kubernetes 1.31+) the interim ones it
# sets first, while it still terminates the Pods. Both say the outcome is decided.
SUCCEEDED_CONDITIONS = ("Complete", "SuccessCriteriaMet")
FAILED_CONDITIONS = ("Failed", "FailureTarget")


def succeeded_condition(job: JobStatus) -> Condition | None:
    """The true condition saying the Job succeeded, or None."""
    return job.true_condition(*SUCCEEDED_CONDITIONS)


def failed_condition(job: JobStatus) -> Condition | None:
    """The true condition saying the Job failed, or None."""
    return job.true_condition(*FAILED_CONDITIONS)


def job_finished(job: JobStatus) -> bool:
    """Whether the Job controller has decided the Job's outcome (the one rule: observe() follows it,
    and a finished Job no longer holds a slot under the cap)."""
    return succeeded_condition(job) is not None or failed_condition(job) is not None


def pod_order(pod: PodStatus) -> tuple[str, str]:
    """Pods in the order they ended (else were created)."""
    finished = pod.worker.terminated.finished_at if pod.worker.terminated is not None else None
    return (finished or pod.creation_timestamp, pod.name)


def pod_failed(pod: PodStatus) -> bool:
    """The Pod failed, or its worker exited non-zero."""
    return pod.phase == "Failed" or pod.exit_code not in (None, 0)


def describe_pod_failure(pod: PodStatus) -> tuple[str, str]:
    """(reason, message) for one failed worker pod: OOMKilled, a worker exit code, or the pod's reason."""
    terminated = pod.worker.terminated
    if terminated is None:
        reason = pod.reason or "PodFailed"
        return reason, f"the worker pod failed ({reason}): {pod.message or 'no details'}"
    exit_code = terminated.exit_code or 0
    if terminated.reason == "OOMKilled":
        return (
            "OOMKilled",
            f"the worker ran out of memory (OOMKilled, exit code {exit_code}); raise "
            "spec.jobTemplate.resources.limits.memory or the operator's worker resources",
        )
    parsed = parse_termination_message(terminated.message)
    known = EXIT_CODES.get(exit_code)
    reason = str(parsed.data.get("reason") or (known[0] if known else "WorkerCrashed"))
    meaning = known[1] if known else f"the worker crashed with exit code {exit_code}"
    detail = parsed.data.get("message")
    if not detail and parsed.problem is None:
        detail = None
    elif not detail and terminated.message:
        # FallbackToLogsOnError: the message may be the tail of the log rather than our JSON.
        detail = terminated.message.strip().splitlines()[-1][:300] if terminated.message.strip() else None
    text = f"{meaning} (exit code {exit_code}, {reason})"
    if detail:
        text += f": {detail}"
    return reason, text


def pods_explain_verdict(job: JobStatus, pods: Sequence[PodStatus]) -> bool:
    """Whether *pods* (the operator's view) already hold what observe() needs for a finished Job.

    Complete: a worker pod that exited 0 (its termination message is the result). Failed: at least
    as many failed pods as the Job counts. Otherwise the Pods must be read fresh: their watch events
    race the Job's.
    """
    if failed_condition(job) is None and succeeded_condition(job) is not None:
        return any(pod.exit_code == 0 for pod in pods)
    failed = [pod for pod in pods if pod_failed(pod)]
    return bool(failed) and len(failed) >= job.failed
