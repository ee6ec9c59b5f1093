"""Job + Pods → CrawlJob status: phases, failure reasons in words, results, and the patch rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crawljob.models import JobStatus, PodStatus
from crawljob.operator import status, workload

NOW = "2026-01-01T00:10:00Z"


def _observe(job: dict[str, Any], pods: list[dict[str, Any]], now: str) -> status.Observation:
    """status.observe on bodies, parsed as the operator's view parses them."""
    return status.observe(JobStatus.parse(job), [PodStatus.parse(pod) for pod in pods], now)


def _explained(job: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    return workload.pods_explain_verdict(JobStatus.parse(job), [PodStatus.parse(pod) for pod in pods])


def _job(condition: str | None = None, reason: str = "", **job_status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "j"},
        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 60},
        "status": {"startTime": "2026-01-01T00:00:00Z", **job_status},
    }
    if condition:
        body["status"]["conditions"] = [
            {
                "type": condition,
                "status": "True",
                "reason": reason,
                "lastTransitionTime": "2026-01-01T00:05:00Z",
            }
        ]
    return body


def _pod(name: str, phase: str, state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": phase, "containerStatuses": [{"name": "worker", "state": state}], **extra},
    }


def _terminated(
    exit_code: int, message: str = "", reason: str = "Error", finished: str = "T1"
) -> dict[str, Any]:
    return {
        "terminated": {"exitCode": exit_code, "reason": reason, "message": message, "finishedAt": finished}
    }


def _summary(**fields: Any) -> str:
    return json.dumps({"outcome": "Succeeded", "exitCode": 0, **fields})


def test_success_fills_the_result_from_the_termination_message() -> None:
    message = _summary(
        rowsRead=42,
        rowsWritten=40,
        rowsRejected=2,
        bytesRead=1000,
        outputUri="s3://o/p/",
        outputObjects=3,
        rejectsUri="s3://o/p/_rejects.csv",
        durationSeconds=1.23456,
        unknownField="x",
    )
    observed = _observe(
        _job("Complete", succeeded=1, completionTime="2026-01-01T00:06:00Z"),
        [_pod("p1", "Succeeded", _terminated(0, message, "Completed"))],
        NOW,
    )
    assert observed.phase == "Succeeded"
    assert observed.result == {
        "rowsRead": 42,
        "rowsWritten": 40,
        "rowsRejected": 2,
        "bytesRead": 1000,
        "outputUri": "s3://o/p/",
        "outputObjects": 3,
        "rejectsUri": "s3://o/p/_rejects.csv",
        "durationSeconds": 1.235,
    }
    assert observed.completion_time == "2026-01-01T00:06:00Z"
    assert "42 rows" in observed.message and "s3://o/p/" in observed.message
    assert not observed.warning


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ("not json at all", "invalid JSON"),
        ('{"outcome": "Succeeded", "rowsRead": 12, "rowsWri', "truncated JSON"),
        ("", "no termination message"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_bad_termination_message_is_reported_not_crashed_on(message: str, words: str) -> None:
    observed = _observe(_job("Complete", succeeded=1), [_pod("p", "Succeeded", _terminated(0, message))], NOW)
    assert observed.phase == "Succeeded"
    assert observed.reason == "ResultUnavailable"
    assert words in observed.message
    assert observed.result is None
    assert observed.warning


@pytest.mark.parametrize(
    ("code", "reason", "words"),
    [
        (2, "InvalidArguments", "arguments or configuration"),
        (3, "BadInput", "not readable CSV"),
        (4, "SourceNotFound", "missing or access to it was denied"),
        (5, "RejectThresholdExceeded", "maxRejectRatio"),
        (6, "OutputForbidden", "cannot write to the output"),
    ],
)
def test_permanent_worker_exit_codes_name_their_cause(code: int, reason: str, words: str) -> None:
    message = json.dumps({"outcome": "Failed", "exitCode": code, "reason": reason, "message": "detail here"})
    observed = _observe(
        _job("Failed", "PodFailurePolicy", failed=1), [_pod("p", "Failed", _terminated(code, message))], NOW
    )
    assert observed.phase == "Failed"
    assert observed.reason == reason
    assert words in observed.message
    assert "detail here" in observed.message
    assert "not retried" in observed.message
    assert f"exit code {code}" in observed.message


def test_backoff_limit_names_the_attempts_and_the_last_failure() -> None:
    transient = json.dumps(
        {"outcome": "Failed", "exitCode": 75, "reason": "Transient", "message": "throttled"}
    )
    pods = [_pod(f"p{i}", "Failed", _terminated(75, transient, finished=f"T{i}")) for i in range(3)]
    observed = _observe(_job("Failed", "BackoffLimitExceeded", failed=3), pods, NOW)
    assert observed.reason == "BackoffLimitExceeded"
    assert "failed 3 times (backoffLimit=2)" in observed.message
    assert "unreachable or throttled" in observed.message
    assert observed.attempts == 3


def test_oom_killed_is_said_in_words() -> None:
    pods = [_pod("p", "Failed", _terminated(137, "", "OOMKilled"))]
    observed = _observe(_job("Failed", "BackoffLimitExceeded", failed=1), pods, NOW)
    assert observed.reason == "OOMKilled"
    assert "ran out of memory" in observed.message
    assert "limits.memory" in observed.message


def test_crash_without_json_falls_back_to_the_log_tail() -> None:
    pods = [_pod("p", "Failed", _terminated(1, "some log\nRuntimeError: boom"))]
    observed = _observe(_job("Failed", "BackoffLimitExceeded", failed=1), pods, NOW)
    assert "crashed with exit code 1" in observed.message
    assert "RuntimeError: boom" in observed.message


def test_deadline_exceeded() -> None:
    observed = _observe(_job("Failed", "DeadlineExceeded", failed=1), [], NOW)
    assert observed.phase == "Failed"
    assert observed.reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds=60" in observed.message
    assert observed.completion_time == "2026-01-01T00:05:00Z"


def test_a_shard_jobs_deadline_is_reported_as_the_whole_runs() -> None:
    # A per-shard run's Job has what was left of the run's deadline; the message names the run's.
    body = _job("Failed", "DeadlineExceeded", failed=1)
    body["spec"]["activeDeadlineSeconds"] = 7
    body["metadata"]["annotations"] = {"crawljob.io/deadline": "60"}
    observed = _observe(body, [], NOW)
    assert observed.reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds=60" in observed.message


def test_a_per_shard_run_past_its_deadline_with_shards_not_started() -> None:
    observed = status.shard_deadline_exceeded(60, 5, 2, NOW)
    assert (observed.phase, observed.reason, observed.warning) == ("Failed", "DeadlineExceeded", True)
    assert observed.message == (
        "the crawl ran longer than its deadline (activeDeadlineSeconds=60) and was stopped: "
        "3 of its 5 shards had not started"
    )
    assert observed.completion_time == NOW


@pytest.mark.parametrize(
    ("waiting", "words"),
    [
        ("ErrImagePull", "cannot be pulled"),
        ("ImagePullBackOff", "cannot be pulled"),
        ("ErrImageNeverPull", "pull policy forbids pulling"),
        ("CreateContainerConfigError", "configuration is invalid"),
    ],
)
def test_stuck_pending_pod_is_surfaced_while_waiting(waiting: str, words: str) -> None:
    pod = _pod("p", "Pending", {"waiting": {"reason": waiting, "message": "secret s3-creds not found"}})
    observed = _observe(_job(active=1), [pod], NOW)
    assert observed.phase == "Pending"
    assert observed.reason == waiting
    assert words in observed.message and "s3-creds" in observed.message
    assert observed.warning


def test_running_and_pending() -> None:
    running = _pod("p", "Running", {"running": {"startedAt": "T"}})
    assert _observe(_job(active=1), [running], NOW).phase == "Running"
    assert _observe(_job(active=1), [], NOW).phase == "Pending"
    retry = _observe(_job(active=1, failed=1), [_pod("a", "Failed", _terminated(1)), running], NOW)
    assert retry.phase == "Running" and retry.attempts == 2 and "attempt 2" in retry.message


def test_status_patch_touches_only_operator_fields_and_is_empty_when_nothing_changed() -> None:
    current = {"progress": {"percent": "50%"}, "kopf": {"x": 1}, "run": 2}
    observation = status.queued(2, 5, 3)
    desired = status.desired_status(current, observation, 1, None, NOW)
    patch = status.status_patch(current, desired)
    assert patch["phase"] == "Queued"
    assert "position 2 of 5" in patch["message"]
    assert not {"progress", "kopf", "run"} & set(patch)
    applied = {**current, **{key: value for key, value in patch.items() if value is not None}}
    again = status.desired_status(applied, observation, 1, None, "2026-01-01T01:00:00Z")
    assert status.status_patch(applied, again) == {}
    queued = next(item for item in again["conditions"] if item["type"] == "Queued")
    assert queued["status"] == "True" and queued["lastTransitionTime"] == NOW


def test_terminal_phases() -> None:
    assert status.is_terminal("Succeeded") and status.is_terminal("Failed")
    assert not status.is_terminal("Running") and not status.is_terminal(None)
    deleted = status.job_deleted("j", NOW)
    assert (
        deleted.phase == "Failed"
        and deleted.reason == "JobDeleted"
        and "crawljob.io/rerun" in deleted.message
    )


def test_a_finished_pod_before_the_jobs_verdict_stays_running_never_back_to_pending() -> None:
    done = _pod("p", "Succeeded", _terminated(0, _summary(rowsRead=1), reason="Completed"))
    observed = _observe(_job(active=0, succeeded=1), [done], NOW)
    assert (observed.phase, observed.reason) == ("Running", "WorkerFinished")
    failed = _pod("p", "Failed", _terminated(75, "", reason="Error"))
    waiting = _observe(_job(active=0, failed=1), [failed], NOW)
    assert (waiting.phase, waiting.reason) == ("Running", "Retrying")
    assert "attempt 1 failed" in waiting.message


def test_pods_in_view_explain_a_finished_job_or_must_be_read_fresh() -> None:
    done = _pod("p", "Succeeded", _terminated(0, _summary(rowsRead=1), reason="Completed"))
    running = _pod("p", "Running", {"running": {"startedAt": "T"}})
    complete = _job("Complete", succeeded=1)
    assert _explained(complete, [done])
    assert not _explained(complete, [running])  # the pod's final event is late
    assert not _explained(complete, [])
    first, second = (_pod(name, "Failed", _terminated(75)) for name in ("a", "b"))
    failed = _job("Failed", "BackoffLimitExceeded", failed=2)
    assert _explained(failed, [first, second])
    assert not _explained(failed, [first])  # one failure not seen yet
    assert not _explained(failed, [])


def test_cancel_request_acts_once_per_annotation_value() -> None:
    assert status.cancel_request(None, None) is None
    assert status.cancel_request("true", None) == "true"
    assert status.cancel_request("", None) == ""  # a bare annotation cancels too
    assert status.cancel_request("true", "true") is None
    assert status.cancel_request("again", "true") == "again"


def test_a_rerun_starts_the_next_run_from_a_clean_slate() -> None:
    patch = status.rerun_patch("t2", 3)
    assert (patch["run"], patch["rerunToken"], patch["phase"], patch["reason"]) == (
        3,
        "t2",
        "Pending",
        "Rerun",
    )
    assert all(
        patch[field] is None for field in ("jobName", "startTime", "completionTime", "result", "progress")
    )
    assert patch["attempts"] == 0


def test_cancelled_keeps_the_record_with_reason_and_condition() -> None:
    running = status.desired_status(
        {}, status.Observation("Running", "WorkerRunning", "running", 1, "T0"), 1, "j", NOW
    )
    observation = status.cancelled("wrong input file", "j", "2026-01-01T00:20:00Z", 1, "T0")
    assert (observation.phase, observation.reason) == ("Cancelled", "Cancelled")
    assert "cancelled: wrong input file" in observation.message
    assert "Job j and its pods were deleted" in observation.message
    assert not observation.warning
    desired = status.desired_status(running, observation, 1, "j", "2026-01-01T00:20:00Z")
    patch = status.status_patch(running, desired)
    assert patch["phase"] == "Cancelled" and patch["cancelToken"] == "wrong input file"
    assert patch["completionTime"] == "2026-01-01T00:20:00Z" and desired["startTime"] == "T0"
    by_type = {item["type"]: item for item in desired["conditions"]}
    assert by_type["Cancelled"]["status"] == "True" and by_type["Cancelled"]["reason"] == "Cancelled"
    assert by_type["Running"]["status"] == "False"
    assert "Superseded" not in by_type  # rare conditions appear only once they happen
    queued = status.cancelled("true", None, NOW)
    assert queued.message.startswith("cancelled with the crawljob.io/cancel annotation; it had not started")
    # After a re-run the Cancelled condition stays, False.
    rerun = status.desired_status(desired, status.queued(1, 1, 8), 1, None, NOW)
    assert {item["type"]: item["status"] for item in rerun["conditions"]}["Cancelled"] == "False"


def test_superseded_names_the_newer_crawljob() -> None:
    observation = status.superseded("data-csv-2", "0100", "00FF", NOW)
    assert (observation.phase, observation.reason) == ("Superseded", "Superseded")
    assert "CrawlJob data-csv-2 is a newer event" in observation.message
    assert "0100 > 00FF" in observation.message
    assert status.is_terminal(observation.phase)
    desired = status.desired_status({}, observation, 1, None, NOW)
    assert {item["type"]: item["status"] for item in desired["conditions"]}["Superseded"] == "True"
    assert desired["completionTime"] == NOW


def test_bookkeeping_alone_waits_for_the_next_transition() -> None:
    assert not status.worth_writing({})
    assert not status.worth_writing({"attempts": 1})
    assert not status.worth_writing({"attempts": 1, "startTime": "T"})
    assert status.worth_writing({"attempts": 2, "message": "attempt 2 failed"})
    assert status.worth_writing({"phase": "Running"})
    # ... except a running crawl's first start time.
    assert status.worth_writing({"startTime": "T"}, {"phase": "Running"})
    assert not status.worth_writing({"startTime": "T2"}, {"phase": "Running", "startTime": "T1"})
    assert not status.worth_writing({"startTime": "T"}, {"phase": "Pending"})


def test_a_non_terminal_observation_never_erases_the_outcome() -> None:
    result = {"rowsRead": 4}
    done = {"phase": "Succeeded", "completionTime": "T9", "result": result}
    late = status.desired_status(done, status.Observation("Running", "WorkerFinished", "late"), 1, "j", NOW)
    patch = status.status_patch(done, late)
    assert "result" not in patch and "completionTime" not in patch
    failed = status.desired_status(done, status.job_deleted("j", NOW), 1, "j", NOW)
    assert status.status_patch(done, failed)["result"] is None  # a terminal one decides


def test_a_sharded_crawl_takes_its_result_from_the_pod_that_finalized() -> None:
    def shard(index: int, rows: int, finalized: bool, finished: str) -> dict[str, Any]:
        message = _summary(rowsRead=rows, shard={"index": index, "count": 3, "finalized": finalized})
        return _pod(f"p{index}", "Succeeded", _terminated(0, message, "Completed", finished))

    job = _job("Complete", succeeded=3, completionTime="2026-01-01T00:06:00Z")
    # The finalizing shard (1) is not the last pod to end: its whole-object result is still chosen.
    observed = _observe(
        job, [shard(0, 10, False, "T1"), shard(1, 30, True, "T2"), shard(2, 10, False, "T3")], NOW
    )
    assert observed.result is not None and observed.result["rowsRead"] == 30

    unfinished = _observe(job, [shard(0, 10, False, "T1"), shard(2, 10, False, "T3")], NOW)
    assert unfinished.reason == "ResultUnavailable" and "finalized" in unfinished.message


def test_a_permanent_failure_before_the_jobs_verdict_is_not_called_retrying() -> None:
    from crawljob_worker.contract import PERMANENT_EXIT_CODES

    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": "worker",
                    "operator": "In",
                    "values": [int(code) for code in PERMANENT_EXIT_CODES],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    job = _job(active=0, failed=1)
    job["spec"]["podFailurePolicy"] = policy
    bad_input = _pod("p", "Failed", _terminated(3, _summary(reason="BadInput"), reason="Error"))
    observed = _observe(job, [bad_input], NOW)
    assert (observed.phase, observed.reason, observed.warning) == ("Running", "WorkerFailed", False)
    assert "not retried" in observed.message and "waiting for a retry" not in observed.message
    # A retryable exit code under the same policy is retried; without a policy (servers older than
    # podFailurePolicy) the Job really retries even a permanent code, and the status says so.
    transient = _pod("p", "Failed", _terminated(75, "", reason="Error"))
    assert _observe(job, [transient], NOW).reason == "Retrying"
    assert _observe(_job(active=0, failed=1), [bad_input], NOW).reason == "Retrying"


def _shards(
    *jobs: tuple[dict[str, Any], list[dict[str, Any]]],
) -> dict[int, tuple[JobStatus, list[PodStatus]]]:
    """Per-shard Jobs (index = position; None for a shard whose Job is not made yet)."""
    return {
        index: (JobStatus.parse(job), [PodStatus.parse(pod) for pod in pods])
        for index, (job, pods) in enumerate(jobs)
        if job
    }


def _shard_done(
    index: int, rows: int, finalized: bool, finished: str, start: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    message = _summary(
        rowsRead=rows, rowsWritten=rows, shard={"index": index, "count": 3, "finalized": finalized}
    )
    job = _job("Complete", succeeded=1, completionTime=finished)
    job["status"]["startTime"] = start
    return job, [_pod(f"s{index}", "Succeeded", _terminated(0, message, "Completed", finished))]


def test_per_shard_jobs_succeed_together_with_the_finalizers_result_summed_attempts_and_outer_times() -> None:
    first = _shard_done(0, 10, False, "2026-01-01T00:04:00Z", "2026-01-01T00:00:30Z")
    last = _shard_done(1, 30, True, "2026-01-01T00:07:00Z", "2026-01-01T00:00:10Z")
    middle_job, middle_pods = _shard_done(2, 10, False, "2026-01-01T00:05:00Z", "2026-01-01T00:01:00Z")
    retried = [_pod("s2-a", "Failed", _terminated(137, "", "Error", "2026-01-01T00:02:00Z")), *middle_pods]
    observed = status.observe_shards(3, _shards(first, last, (middle_job, retried)), NOW)
    assert (observed.phase, observed.reason) == ("Succeeded", "Completed")
    assert observed.result is not None and observed.result["rowsRead"] == 30
    assert observed.attempts == 4
    assert observed.start_time == "2026-01-01T00:00:10Z"
    assert observed.completion_time == "2026-01-01T00:07:00Z"


def test_per_shard_jobs_fail_as_soon_as_one_fails_naming_the_shard() -> None:
    bad = json.dumps(
        {"outcome": "Failed", "exitCode": 3, "reason": "BadInput", "message": "shard 2 of 3: binary data"}
    )
    running = (_job(active=1), [_pod("r", "Running", {"running": {"startedAt": "T"}})])
    failed = (_job("Failed", "PodFailurePolicy", failed=1), [_pod("f", "Failed", _terminated(3, bad))])
    observed = status.observe_shards(3, _shards(running, _shard_done(1, 5, False, "T", "T"), failed), NOW)
    assert (observed.phase, observed.reason) == ("Failed", "BadInput")
    assert observed.message.startswith("shard 2 of 3: ") and observed.message.count("shard 2 of 3") == 1
    assert "binary data" in observed.message and observed.warning
    assert observed.completion_time == "2026-01-01T00:05:00Z"
    # Two failed: the earlier failure is the one named.
    later = _job("Failed", "BackoffLimitExceeded", failed=3)
    later["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T00:09:00Z"
    both = status.observe_shards(3, _shards((later, []), running, failed), NOW)
    assert both.message.startswith("shard 2 of 3: ") and both.reason == "BadInput"


def test_per_shard_jobs_run_while_any_runs_and_name_a_retrying_or_stuck_shard() -> None:
    running = (_job(active=1), [_pod("r", "Running", {"running": {"startedAt": "T"}})])
    done = _shard_done(0, 5, False, "T", "T")
    observed = status.observe_shards(4, _shards(done, running), NOW)
    assert (observed.phase, observed.reason) == ("Running", "WorkerRunning")
    assert observed.message == "the shards are running: 1 of 4 done, 1 running, 2 not started"
    retrying = (_job(active=0, failed=1), [_pod("x", "Failed", _terminated(137, "", "Error"))])
    observed = status.observe_shards(3, _shards(done, running, retrying), NOW)
    assert (observed.phase, observed.reason) == ("Running", "Retrying") and observed.warning
    assert observed.message.startswith("shard 2 of 3: attempt 1 failed")
    stuck = (_job(active=1), [_pod("p", "Pending", {"waiting": {"reason": "ErrImagePull", "message": "no"}})])
    observed = status.observe_shards(2, _shards(stuck, (_job(active=1), [])), NOW)
    assert (observed.phase, observed.reason) == ("Pending", "ErrImagePull")
    assert observed.message.startswith("shard 0 of 2: waiting: the worker image cannot be pulled")
    waiting = status.observe_shards(2, _shards((_job(active=1), []), (_job(active=1), [])), NOW)
    assert (waiting.phase, waiting.reason) == ("Pending", "JobCreated")
    # All made shards succeeded but one is not made yet: still running, never Succeeded early.
    early = status.observe_shards(3, _shards(done, _shard_done(1, 5, False, "T", "T")), NOW)
    assert early.phase == "Running" and "2 of 3 done" in early.message


def test_an_indexed_jobs_failure_names_the_shard_of_the_failed_pod() -> None:
    job = _job("Failed", "BackoffLimitExceeded", failed=2)
    job["spec"].update(completionMode="Indexed", completions=4)

    def indexed(name: str, index: int, finished: str) -> dict[str, Any]:
        pod = _pod(name, "Failed", _terminated(137, "", "OOMKilled", finished))
        pod["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(index)}
        return pod

    observed = _observe(job, [indexed("a", 1, "T1"), indexed("b", 3, "T2")], NOW)
    assert observed.reason == "OOMKilled"
    assert observed.message.startswith("shard 3 of 4: the worker failed 2 times")
    # The worker's own message already names its shard: said once.
    worker = json.dumps(
        {"outcome": "Failed", "exitCode": 3, "reason": "BadInput", "message": "shard 1 of 4: bad"}
    )
    policy = _job("Failed", "PodFailurePolicy", failed=1)
    policy["spec"].update(completionMode="Indexed", completions=4)
    pod = _pod("c", "Failed", _terminated(3, worker))
    pod["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": "1"}
    named = _observe(policy, [pod], NOW)
    assert named.message.startswith("shard 1 of 4: ") and named.message.count("shard 1 of 4") == 1
    # A deadline is the whole Job's, not a shard's.
    deadline = _job("Failed", "DeadlineExceeded", failed=1)
    deadline["spec"].update(completionMode="Indexed", completions=4)
    assert not _observe(deadline, [indexed("d", 2, "T3")], NOW).message.startswith("shard")
