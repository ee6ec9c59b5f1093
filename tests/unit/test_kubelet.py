"""The local kubelet's pure parts: Pod → process, termination message, Pod status."""

from __future__ import annotations

from typing import Any

import pytest

from crawljob.local import kubelet


def pod(**container: Any) -> dict[str, Any]:
    base = {"name": "worker", "image": "crawljob-worker:1", "command": ["crawljob-worker"]}
    return {
        "metadata": {
            "name": "cj-abc-x7k2p",
            "namespace": "ns1",
            "uid": "u-1",
            "labels": {"job-name": "cj-abc"},
        },
        "spec": {"containers": [{**base, **container}]},
        "status": {"phase": "Pending"},
    }


def test_expand_replaces_known_references_and_keeps_unknown_ones() -> None:
    env = {"NAME": "cj-abc", "URI": "s3://b/k"}
    assert kubelet.expand("$(URI) --name=$(NAME)", env) == "s3://b/k --name=cj-abc"
    assert kubelet.expand("$(MISSING) $$(NAME) cost $$5", env) == "$(MISSING) $(NAME) cost $5"


def test_process_spec_takes_command_args_env_and_downward_api() -> None:
    spec = kubelet.process_spec(
        pod(
            args=["s3://b/$(KEY)", "--output", "s3://out/"],
            env=[
                {"name": "KEY", "value": "data.csv"},
                {"name": "COPY", "value": "$(KEY).bak"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "JOB", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['job-name']"}}},
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "password"}}},
            ],
            terminationMessagePolicy="FallbackToLogsOnError",
        )
    )
    assert spec.argv == ["crawljob-worker", "s3://b/data.csv", "--output", "s3://out/"]
    assert spec.env == {"KEY": "data.csv", "COPY": "data.csv.bak", "POD": "cj-abc-x7k2p", "JOB": "cj-abc"}
    assert spec.secret_refs == {"SECRET": ("secret", "s3", "password")}
    assert spec.message_policy == "FallbackToLogsOnError"


def test_pod_without_command_is_not_runnable() -> None:
    with pytest.raises(kubelet.PodNotRunnable, match="no command"):
        kubelet.process_spec(pod(command=[]))


def test_termination_message_prefers_the_file_and_falls_back_to_logs_on_failure() -> None:
    logs = "\n".join(f"line {i}" for i in range(200))
    assert kubelet.termination_message('{"outcome": "Failed"}\n', logs, 3, "FallbackToLogsOnError") == (
        '{"outcome": "Failed"}'
    )
    fallback = kubelet.termination_message("", logs, 3, "FallbackToLogsOnError")
    assert fallback.splitlines() == [f"line {i}" for i in range(120, 200)]
    assert kubelet.termination_message("", logs, 0, "FallbackToLogsOnError") == ""
    assert kubelet.termination_message("", logs, 3, "File") == ""
    assert len(kubelet.termination_message("x" * 10_000, "", 0, "File")) == kubelet.MESSAGE_LIMIT


def test_terminated_status_reports_exit_code_reason_and_message() -> None:
    ok = kubelet.terminated_status(pod(), 0, '{"outcome":"Succeeded"}', "t0", "t1")
    assert ok["phase"] == "Succeeded"
    state = ok["containerStatuses"][0]["state"]["terminated"]
    assert state == {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": "t0",
        "finishedAt": "t1",
        "message": '{"outcome":"Succeeded"}',
    }
    failed = kubelet.terminated_status(pod(), 5, "", "t0", "t1")
    assert failed["phase"] == "Failed"
    assert failed["containerStatuses"][0]["state"]["terminated"]["reason"] == "Error"
    killed = kubelet.terminated_status(pod(), -15, "", "t0", "t1")
    assert killed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143


def test_running_status_names_the_container() -> None:
    status = kubelet.running_status(pod(), "t0")
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["name"] == "worker"
    assert status["containerStatuses"][0]["state"] == {"running": {"startedAt": "t0"}}


def test_only_pending_pods_not_being_deleted_are_started() -> None:
    assert kubelet.is_pending(pod())
    assert not kubelet.is_pending({**pod(), "status": {"phase": "Running"}})
    deleting = pod()
    deleting["metadata"]["deletionTimestamp"] = "t"
    assert not kubelet.is_pending(deleting)
