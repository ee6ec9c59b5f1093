"""Job + Pods → what the CrawlJob status should say (pure: no I/O).

The operator owns phase, reason, message, conditions, observedGeneration, jobName, attempts,
startTime, completionTime and result. It never writes status.progress: the worker does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crawljob import resource
from crawljob.models import Body, JobStatus, PodStatus
from crawljob.operator import conditions
from crawljob.operator.workload import (
    STUCK_WAITING_REASONS,
    TerminationMessage,
    describe_pod_failure,
    failed_condition,
    parse_termination_message,
    pod_failed,
    pod_order,
    succeeded_condition,
)
from crawljob_worker.contract import SHARD_KEY

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


def result_pod(winners: Sequence[PodStatus]) -> PodStatus:
    """The succeeded pod whose termination message is the crawl's result: of a sharded crawl, the
    one that finalized (it carries the whole object's counts); else the last to end."""
    for pod in reversed(winners):
        terminated = pod.worker.terminated
        shard = parse_termination_message(terminated.message if terminated else None).data.get(SHARD_KEY)
        if isinstance(shard, dict) and shard.get("finalized"):
            return pod
    return winners[-1]


def _succeeded(winners: Sequence[PodStatus], attempts: int, start: str | None, finished: str) -> Observation:
    """Succeeded, with the result of the pod that finalized (else the last winner): *winners* are the
    pods whose worker exited 0, in pod_order."""
    terminated = result_pod(winners).worker.terminated if winners else None
    parsed = parse_termination_message(terminated.message if terminated is not None else None)
    shard = parsed.data.get(SHARD_KEY)
    if isinstance(shard, dict) and not shard.get("finalized"):
        parsed = TerminationMessage(
            parsed.data, None, "no shard's pod finalized the sharded crawl (no whole-object result)"
        )
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


def name_shard(message: str, index: int, shards: int) -> str:
    """*message* starting with `shard I of N: ` (once: the worker's own message may start so too)."""
    prefix = f"shard {index} of {shards}: "
    return prefix + message.replace(prefix, "", 1)


def observe(job: JobStatus, pods: Sequence[PodStatus], now: str) -> Observation:
    """The crawl's state from its Job and the Job's Pods."""
    ordered = sorted(pods, key=pod_order)
    attempts = max(len(ordered), job.succeeded + job.failed + job.active)
    start = job.start_time
    complete = succeeded_condition(job)
    failed = failed_condition(job)
    if complete is not None and failed is None:
        winners = [pod for pod in ordered if pod.exit_code == 0]
        return _succeeded(
            winners, attempts, start, job.completion_time or complete.last_transition_time or now
        )
    if failed is not None:
        finished = failed.last_transition_time or now
        job_reason = failed.reason or "JobFailed"
        failed_pods = [pod for pod in ordered if pod_failed(pod)]
        pod_reason, pod_message = describe_pod_failure(failed_pods[-1]) if failed_pods else ("", "")
        if job_reason == "DeadlineExceeded":
            reason = "DeadlineExceeded"
            message = (
                f"the crawl ran longer than its deadline (activeDeadlineSeconds={job.active_deadline_seconds}) "
                "and was stopped"
            )
        elif job_reason == "PodFailurePolicy":
            reason = pod_reason or "PodFailurePolicy"
            message = (pod_message or failed.message or "") + "; not retried (permanent failure)"
        elif job_reason == "BackoffLimitExceeded":
            reason = "OOMKilled" if pod_reason == "OOMKilled" else "BackoffLimitExceeded"
            message = f"the worker failed {attempts} times (backoffLimit={job.backoff_limit})"
            if pod_message:
                message += f"; last failure: {pod_message}"
        else:
            reason = job_reason
            message = failed.message or f"the Job failed ({job_reason})"
            if pod_message:
                message += f"; last failure: {pod_message}"
        index = failed_pods[-1].completion_index if failed_pods else None
        if job.indexed and job.completions > 1 and index is not None and job_reason != "DeadlineExceeded":
            message = name_shard(message, index, job.completions)  # the shard whose pod failed last
        return Observation("Failed", reason, message, attempts, start, finished, None, warning=True)
    # Not finished: running, or waiting for a pod (and possibly stuck while waiting).
    for pod in reversed(ordered):
        waiting_reason = pod.worker.waiting_reason
        stuck = STUCK_WAITING_REASONS.get(str(waiting_reason))
        if waiting_reason and stuck and pod.phase in (None, "Pending"):
            detail = pod.worker.waiting_message or ""
            return Observation(
                "Pending",
                waiting_reason,
                f"waiting: {stuck}" + (f": {detail}" if detail else ""),
                attempts,
                start,
                warning=True,
            )
    running = [pod for pod in ordered if pod.phase == "Running"]
    if running or (job.active > 0 and any(pod.worker.running for pod in ordered)):
        retry = f" (attempt {attempts})" if attempts > 1 else ""
        return Observation("Running", "WorkerRunning", f"the worker is running{retry}", attempts, start)
    # A pod ended but the Job has no verdict yet (the Job controller writes it a moment later, or a
    # retry is coming): the crawl is still under way, never back to Pending.
    ended = [pod for pod in ordered if pod.phase in ("Succeeded", "Failed")]
    if ended:
        if ended[-1].phase == "Succeeded":
            return Observation(
                "Running",
                "WorkerFinished",
                "the worker finished; waiting for the Job to complete",
                attempts,
                start,
            )
        _, failure = describe_pod_failure(ended[-1])
        if ended[-1].exit_code in job.fail_job_exit_codes:
            # The Job's podFailurePolicy fails it for this exit code: no retry is coming, and the
            # Failed observation (with its Warning) follows as soon as the Job controller says so.
            return Observation(
                "Running",
                "WorkerFailed",
                f"the worker failed ({failure}); not retried, waiting for the Job to fail",
                attempts,
                start,
            )
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


def observe_shards(
    shards: int, jobs: Mapping[int, tuple[JobStatus, Sequence[PodStatus]]], now: str
) -> Observation:
    """The crawl's state from the Jobs of a per-shard run (*jobs*: shard index → its Job and Pods; a
    shard not in it has no Job yet). Failed as soon as one shard's Job failed (its reason, the message
    naming the shard; the earliest failure if several); Succeeded when all *shards* succeeded, with
    the result of the pod that finalized; else Running while any shard runs or is done. Attempts are
    summed, startTime is the earliest, completionTime the latest."""
    seen = {index: observe(job, pods, now) for index, (job, pods) in sorted(jobs.items())}
    attempts = sum(item.attempts for item in seen.values())
    start = min((item.start_time for item in seen.values() if item.start_time), default=None)
    failed = [
        (item.completion_time or now, index, item) for index, item in seen.items() if item.phase == "Failed"
    ]
    if failed:
        finished, index, first = min(failed, key=lambda entry: (entry[0], entry[1]))
        message = name_shard(first.message, index, shards)
        return Observation("Failed", first.reason, message, attempts, start, finished, None, warning=True)
    done = [index for index, item in seen.items() if item.phase == "Succeeded"]
    if len(done) == shards:
        winners = sorted(
            (pod for _, pods in jobs.values() for pod in pods if pod.exit_code == 0), key=pod_order
        )
        finished = max(item.completion_time or now for item in seen.values())
        return _succeeded(winners, attempts, start, finished)
    for index, item in seen.items():
        # A shard retrying, stuck waiting for its pod, or failed and about to be failed by its Job.
        if item.phase != "Succeeded" and (item.warning or item.reason == "WorkerFailed"):
            message = name_shard(item.message, index, shards)
            return Observation(item.phase, item.reason, message, attempts, start, warning=item.warning)
    running = sum(1 for item in seen.values() if item.phase == "Running")
    if running or done:
        message = f"the shards are running: {len(done)} of {shards} done, {running} running"
        if shards - len(seen):
            message += f", {shards - len(seen)} not started"
        return Observation("Running", "WorkerRunning", message, attempts, start)
    return Observation(
        "Pending",
        "JobCreated",
        f"the Jobs of the {shards} shards are being created; waiting for their worker pods to start",
        attempts,
        start,
    )


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


def shard_jobs_deleted(stem: str, shards: int, now: str) -> Observation:
    """Every Job of a per-shard run disappeared before the run finished."""
    return Observation(
        "Failed",
        "JobDeleted",
        f"the Jobs of its {shards} shards ({stem}-s*) were deleted before they finished; "
        "re-run with the crawljob.io/rerun annotation",
        completion_time=now,
        warning=True,
    )


def shard_deadline_exceeded(deadline: int, shards: int, made: int, now: str) -> Observation:
    """A per-shard run reached its deadline (counted from its first shard Job) with shards not started."""
    return Observation(
        "Failed",
        "DeadlineExceeded",
        f"the crawl ran longer than its deadline (activeDeadlineSeconds={deadline}) and was stopped: "
        f"{shards - made} of its {shards} shards had not started",
        completion_time=now,
        warning=True,
    )


CANCEL_PLAIN_VALUES = frozenset({"", "true", "yes", "1"})


def cancel_request(annotation: str | None, acted_on: str | None) -> str | None:
    """The crawljob.io/cancel value to act on now, or None (absent, or already acted on: *acted_on*)."""
    if annotation is None or annotation == acted_on:
        return None
    return annotation


def rerun_patch(token: str, run: int) -> Body:
    """The status patch starting run *run* of a finished CrawlJob (re-run request *token*)."""
    return {
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


def cancelled(
    token: str,
    job_name: str | None,
    now: str,
    attempts: int = 0,
    start: str | None = None,
    shards: int = 0,
) -> Observation:
    """The crawl was cancelled with the crawljob.io/cancel annotation (value *token*); *shards* > 0:
    its run was one Job per shard, *job_name* their stem."""
    why = (
        "cancelled with the crawljob.io/cancel annotation"
        if token.strip().lower() in CANCEL_PLAIN_VALUES
        else f"cancelled: {token.strip()}"
    )
    if shards and job_name:
        done = f"the Jobs of its {shards} shards ({job_name}-s*) and their pods were deleted"
    elif job_name:
        done = f"its Job {job_name} and its pods were deleted"
    else:
        done = "it had not started; no Job was made"
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


def override_not_allowed(problem: str, now: str) -> Observation:
    """The CrawlJob's jobTemplate asks for an image, service account or env the settings refuse."""
    return Observation("Failed", "OverrideNotAllowed", problem, completion_time=now, warning=True)


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
    return phase in resource.TERMINAL_PHASES
