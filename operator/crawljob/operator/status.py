"""Job + Pods → what the CrawlJob status should say (pure: no I/O).

The operator owns phase, reason, message, conditions, observedGeneration, jobName, attempts,
startTime, completionTime and result. It never writes status.progress: the worker does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crawljob.operator import conditions

Body = dict[str, Any]

# Worker exit codes (docs/contracts.md) → reason and what it means for the user.
EXIT_CODES: Mapping[int, tuple[str, str]] = {
    2: ("InvalidArguments", "the worker rejected its arguments or configuration; fix the CrawlJob spec"),
    3: ("BadInput", "the source is not readable CSV (binary, undecodable or unsupported compression)"),
    4: ("SourceNotFound", "the source object is missing or access to it was denied"),
    5: (
        "RejectThresholdExceeded",
        "more rows were rejected than maxRejectRatio allows (rejects were written)",
    ),
    6: ("OutputForbidden", "the worker cannot write to the output location"),
    75: ("Transient", "S3 was unreachable or throttled beyond the worker's retry budget"),
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
RESULT_FIELDS = (
    "rowsRead",
    "rowsWritten",
    "rowsRejected",
    "bytesRead",
    "outputUri",
    "outputObjects",
    "rejectsUri",
    "manifestUri",
    "durationSeconds",
)
_INT_FIELDS = frozenset({"rowsRead", "rowsWritten", "rowsRejected", "bytesRead", "outputObjects"})
OPERATOR_FIELDS = (
    "phase",
    "reason",
    "message",
    "conditions",
    "observedGeneration",
    "jobName",
    "attempts",
    "startTime",
    "completionTime",
    "result",
)


@dataclass(frozen=True)
class Observation:
    """What the Job and its Pods say about a crawl, in the CrawlJob's words."""

    phase: str
    reason: str
    message: str
    attempts: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    result: Body | None = None
    warning: bool = False
    extra: Body = field(default_factory=dict)


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
    for name in RESULT_FIELDS:
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


def _job_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    found = conditions.get_condition((job.get("status") or {}).get("conditions"), type_)
    return found if found is not None and found.get("status") == "True" else None


def _container_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for item in statuses:
        if item.get("name") == "worker":
            return dict(item)
    return dict(statuses[0]) if statuses else {}


def _pod_order(pod: Mapping[str, Any]) -> tuple[str, str]:
    terminated = (_container_status(pod).get("state") or {}).get("terminated") or {}
    stamp = terminated.get("finishedAt") or (pod.get("metadata") or {}).get("creationTimestamp") or ""
    return (str(stamp), str((pod.get("metadata") or {}).get("name") or ""))


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    state = _container_status(pod).get("state") or {}
    found = state.get("terminated")
    return found if isinstance(found, Mapping) else None


def describe_pod_failure(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(reason, message) for one failed worker pod: OOMKilled, a worker exit code, or the pod's reason."""
    terminated = _terminated(pod)
    pod_status = pod.get("status") or {}
    if terminated is None:
        reason = str(pod_status.get("reason") or "PodFailed")
        return reason, f"the worker pod failed ({reason}): {pod_status.get('message') or 'no details'}"
    exit_code = int(terminated.get("exitCode") or 0)
    if terminated.get("reason") == "OOMKilled":
        return (
            "OOMKilled",
            f"the worker ran out of memory (OOMKilled, exit code {exit_code}); raise "
            "spec.jobTemplate.resources.limits.memory or the operator's worker resources",
        )
    parsed = parse_termination_message(terminated.get("message"))
    known = EXIT_CODES.get(exit_code)
    reason = str(parsed.data.get("reason") or (known[0] if known else "WorkerCrashed"))
    meaning = known[1] if known else f"the worker crashed with exit code {exit_code}"
    detail = parsed.data.get("message")
    if not detail and parsed.problem is None:
        detail = None
    elif not detail and terminated.get("message"):
        # FallbackToLogsOnError: the message may be the tail of the log rather than our JSON.
        detail = str(terminated["message"]).strip().splitlines()[-1][:300]
    text = f"{meaning} (exit code {exit_code}, {reason})"
    if detail:
        text += f": {detail}"
    return reason, text


def observe(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: str) -> Observation:
    """The crawl's state from its Job and the Job's Pods."""
    job_status = job.get("status") or {}
    ordered = sorted(pods, key=_pod_order)
    attempts = max(
        len(ordered),
        int(job_status.get("succeeded") or 0)
        + int(job_status.get("failed") or 0)
        + int(job_status.get("active") or 0),
    )
    start = job_status.get("startTime")
    complete = _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet")
    failed = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if complete is not None and failed is None:
        winners = [pod for pod in ordered if (_terminated(pod) or {}).get("exitCode") == 0]
        terminated = _terminated(winners[-1]) if winners else None
        parsed = parse_termination_message((terminated or {}).get("message"))
        finished = job_status.get("completionTime") or complete.get("lastTransitionTime") or now
        if parsed.problem is not None:
            return Observation(
                "Succeeded",
                "ResultUnavailable",
                f"the worker succeeded but its result is unknown: {parsed.problem}",
                attempts,
                start,
                finished,
                None,
                warning=True,
            )
        result = parsed.result or {}
        message = (
            f"processed {result.get('rowsRead', '?')} rows: {result.get('rowsWritten', '?')} written, "
            f"{result.get('rowsRejected', 0)} rejected"
        )
        if result.get("outputUri"):
            message += f", output in {result['outputUri']}"
        return Observation("Succeeded", "Completed", message, attempts, start, finished, result)
    if failed is not None:
        finished = failed.get("lastTransitionTime") or now
        job_reason = str(failed.get("reason") or "JobFailed")
        failed_pods = [
            pod
            for pod in ordered
            if (pod.get("status") or {}).get("phase") == "Failed"
            or ((_terminated(pod) or {}).get("exitCode") not in (None, 0))
        ]
        pod_reason, pod_message = describe_pod_failure(failed_pods[-1]) if failed_pods else ("", "")
        backoff = (job.get("spec") or {}).get("backoffLimit")
        if job_reason == "DeadlineExceeded":
            deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
            reason = "DeadlineExceeded"
            message = (
                f"the crawl ran longer than its deadline (activeDeadlineSeconds={deadline}) and was stopped"
            )
        elif job_reason == "PodFailurePolicy":
            reason = pod_reason or "PodFailurePolicy"
            message = (pod_message or str(failed.get("message") or "")) + "; not retried (permanent failure)"
        elif job_reason == "BackoffLimitExceeded":
            reason = "OOMKilled" if pod_reason == "OOMKilled" else "BackoffLimitExceeded"
            message = f"the worker failed {attempts} times (backoffLimit={backoff})"
            if pod_message:
                message += f"; last failure: {pod_message}"
        else:
            reason = job_reason
            message = str(failed.get("message") or f"the Job failed ({job_reason})")
            if pod_message:
                message += f"; last failure: {pod_message}"
        return Observation("Failed", reason, message, attempts, start, finished, None, warning=True)
    # Not finished: running, or waiting for a pod (and possibly stuck while waiting).
    for pod in reversed(ordered):
        waiting = (_container_status(pod).get("state") or {}).get("waiting") or {}
        stuck = STUCK_WAITING_REASONS.get(str(waiting.get("reason")))
        if stuck and (pod.get("status") or {}).get("phase") in (None, "Pending"):
            detail = waiting.get("message") or ""
            return Observation(
                "Pending",
                str(waiting["reason"]),
                f"waiting: {stuck}" + (f": {detail}" if detail else ""),
                attempts,
                start,
                warning=True,
            )
    running = [pod for pod in ordered if (pod.get("status") or {}).get("phase") == "Running"]
    if running or (
        int(job_status.get("active") or 0) > 0
        and any((_container_status(pod).get("state") or {}).get("running") for pod in ordered)
    ):
        retry = f" (attempt {attempts})" if attempts > 1 else ""
        return Observation("Running", "WorkerRunning", f"the worker is running{retry}", attempts, start)
    # A pod ended but the Job has no verdict yet (the Job controller writes it a moment later, or a
    # retry is coming): the crawl is still under way, never back to Pending.
    ended = [pod for pod in ordered if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
    if ended:
        if (ended[-1].get("status") or {}).get("phase") == "Succeeded":
            return Observation(
                "Running",
                "WorkerFinished",
                "the worker finished; waiting for the Job to complete",
                attempts,
                start,
            )
        _, failure = describe_pod_failure(ended[-1])
        return Observation(
            "Running",
            "Retrying",
            f"attempt {attempts} failed" + (f" ({failure})" if failure else "") + "; waiting for a retry",
            attempts,
            start,
            warning=True,
        )
    return Observation(
        "Pending", "JobCreated", "the Job is created; waiting for the worker pod to start", attempts, start
    )


def pods_explain_verdict(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> bool:
    """Whether *pods* (the operator's view) already hold what observe() needs for a finished Job.

    Complete: a worker pod that exited 0 (its termination message is the result). Failed: at least
    as many failed pods as the Job counts. Otherwise the Pods must be read fresh: their watch events
    race the Job's.
    """
    job_status = job.get("status") or {}
    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        return any((_terminated(pod) or {}).get("exitCode") == 0 for pod in pods)
    failed = [
        pod
        for pod in pods
        if (pod.get("status") or {}).get("phase") == "Failed"
        or (_terminated(pod) or {}).get("exitCode") not in (None, 0)
    ]
    return bool(failed) and len(failed) >= int(job_status.get("failed") or 0)


def queued(position: int, queue_length: int, max_active: int) -> Observation:
    """A CrawlJob waiting for a free slot under the concurrency cap."""
    return Observation(
        "Queued",
        "WaitingForSlot",
        f"waiting for a free slot: position {position} of {queue_length} in the queue "
        f"(at most {max_active} crawls run at once)",
    )


def job_deleted(job_name: str, now: str) -> Observation:
    """The Job disappeared before it finished (deleted by someone other than the operator)."""
    return Observation(
        "Failed",
        "JobDeleted",
        f"the Job {job_name} was deleted before it finished; re-run with the crawljob.io/rerun annotation",
        completion_time=now,
        warning=True,
    )


CANCEL_PLAIN_VALUES = frozenset({"", "true", "yes", "1"})


def cancel_request(annotation: str | None, current: Mapping[str, Any] | None) -> str | None:
    """The crawljob.io/cancel value to act on now, or None (absent, or already acted on)."""
    if annotation is None:
        return None
    if annotation == (current or {}).get("cancelToken"):
        return None
    return annotation


def cancelled(
    token: str, job_name: str | None, now: str, attempts: int = 0, start: str | None = None
) -> Observation:
    """The crawl was cancelled with the crawljob.io/cancel annotation (value *token*)."""
    why = (
        "cancelled with the crawljob.io/cancel annotation"
        if token.strip().lower() in CANCEL_PLAIN_VALUES
        else f"cancelled: {token.strip()}"
    )
    done = (
        f"its Job {job_name} and its pods were deleted" if job_name else "it had not started; no Job was made"
    )
    return Observation(
        "Cancelled",
        "Cancelled",
        f"{why}; {done}; re-run with the crawljob.io/rerun annotation",
        attempts,
        start,
        now,
        extra={"cancelToken": token},
    )


def superseded(newer: str, newer_sequencer: str, own_sequencer: str, now: str) -> Observation:
    """A newer event of the same object arrived before this CrawlJob started: it is not run."""
    return Observation(
        "Superseded",
        "Superseded",
        f"not run: CrawlJob {newer} is a newer event for the same object (sequencer "
        f"{newer_sequencer} > {own_sequencer}) and will process its current version",
        completion_time=now,
    )


def invalid_spec(problem: str, now: str) -> Observation:
    """The CrawlJob cannot be turned into a Job."""
    return Observation("Failed", "InvalidSpec", problem, completion_time=now, warning=True)


def desired_status(
    current: Mapping[str, Any] | None,
    observation: Observation,
    generation: int | None,
    job_name: str | None,
    now: str,
) -> Body:
    """The operator's fields of the status for *observation* (conditions keep their transition times)."""
    current = current or {}
    conds: list[Body] = list(current.get("conditions") or [])
    phase, reason, message = observation.phase, observation.reason, observation.message
    terminal = is_terminal(phase)
    # One condition per phase family: True with the observation's reason/message while in it. The
    # rarer endings (last two, not always shown) get theirs when they happen, and keep it, False,
    # after a re-run.
    for type_, owning_phase, idle_reason, always in (
        ("Queued", "Queued", "Admitted", True),
        ("Running", "Running", phase, True),
        ("Complete", "Succeeded", "NotComplete", True),
        ("Failed", "Failed", "NotFailed", True),
        ("Cancelled", "Cancelled", "NotCancelled", False),
        ("Superseded", "Superseded", "NotSuperseded", False),
    ):
        active = phase == owning_phase
        if always or active or conditions.get_condition(conds, type_) is not None:
            conds = conditions.set_condition(
                conds,
                type_,
                active,
                reason if active else idle_reason,
                message if active else "",
                now,
                generation,
            )
    status: Body = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "conditions": conds,
        "observedGeneration": generation,
        "jobName": job_name,
        "attempts": observation.attempts or current.get("attempts") or 0,
        "startTime": observation.start_time or current.get("startTime"),
        # Only a terminal observation says anything about the outcome: a non-terminal one (e.g. from
        # a view lagging behind, or a second operator by mistake) never erases it. A re-run clears
        # both explicitly.
        "completionTime": observation.completion_time if terminal else current.get("completionTime"),
        "result": observation.result if terminal else current.get("result"),
    }
    for name, value in observation.extra.items():
        status.setdefault(name, value)
    return status


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Body:
    """A merge patch turning *current* into *desired* for the operator's fields only ({} if equal).

    Fields the operator does not own (progress, kopf's bookkeeping, run/rerun markers) are untouched.
    """
    current = current or {}
    patch: Body = {}
    for name in (*OPERATOR_FIELDS, *(name for name in desired if name not in OPERATOR_FIELDS)):
        want = desired.get(name)
        have = current.get(name)
        if name == "conditions":
            if _conditions_key(want) != _conditions_key(have):
                patch[name] = want
        elif want != have:
            patch[name] = want
    return patch


DEFERRABLE_FIELDS = frozenset({"attempts", "startTime"})


def worth_writing(patch: Mapping[str, Any], current: Mapping[str, Any] | None = None) -> bool:
    """Whether a status patch must be sent now.

    A patch of bookkeeping alone (a pod counted, the Job's start time) waits for the next change of
    phase, reason or message, which carries it along: that saves two writes (and their watch
    events) per crawl, and every crawl ends with a terminal write. Only a running crawl's first
    startTime is written at once (a long crawl would otherwise show none until it ends).
    """
    if not patch:
        return False
    if not set(patch) <= DEFERRABLE_FIELDS:
        return True
    current = current or {}
    return current.get("phase") == "Running" and not current.get("startTime") and bool(patch.get("startTime"))


def _conditions_key(value: Any) -> Any:
    # lastTransitionTime is carried over by set_condition; compare everything else exactly.
    return json.dumps(value or [], sort_keys=True)


def is_terminal(phase: str | None) -> bool:
    """Whether *phase* is final (no Job will run again without a re-run)."""
    return phase in ("Succeeded", "Failed", "Cancelled", "Superseded")
