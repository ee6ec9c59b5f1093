"""The local kubelet's pure parts (`local/pods.py`): Pod → container spec, termination message, Pod status."""

from __future__ import annotations

from typing import Any

import pytest

from crawljob.local import pods
from crawljob.local.pods import Outcome


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
    assert pods.expand("$(URI) --name=$(NAME)", env) == "s3://b/k --name=cj-abc"
    assert pods.expand("$(MISSING) $$(NAME) cost $$5", env) == "$(MISSING) $(NAME) cost $5"


def test_container_spec_takes_command_args_env_and_downward_api() -> None:
    spec = pods.container_spec(
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
    assert spec.refs == {"SECRET": ("secret", "s3", "password")}
    assert spec.message_policy == "FallbackToLogsOnError"


def test_container_spec_reads_security_limits_volumes_and_token_mount() -> None:
    body = pod(
        securityContext={"readOnlyRootFilesystem": True, "runAsNonRoot": True},
        resources={"limits": {"memory": "64Mi", "cpu": "1"}},
        volumeMounts=[
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cfg", "mountPath": "/etc/x"},
            {"name": "hook", "mountPath": "/etc/hook", "readOnly": True},
        ],
        terminationMessagePath="/dev/termination-log",
    )
    body["spec"].update(
        securityContext={"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": False},
        volumes=[
            {"name": "tmp", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "x"}},
            {"name": "hook", "secret": {"secretName": "webhook"}},
        ],
        serviceAccountName="worker",
        automountServiceAccountToken=False,
        terminationGracePeriodSeconds=5,
    )
    spec = pods.container_spec(body)
    assert (spec.run_as_user, spec.run_as_group) == (10001, 10001)
    assert spec.run_as_non_root and spec.read_only_root  # the container's context wins over the pod's
    assert spec.memory_limit == 64 * 2**20
    assert spec.empty_dirs == {"/tmp": "tmp"}
    assert spec.secret_volumes == {"/etc/hook": "webhook"}  # ConfigMap volumes are not mounted
    assert (spec.service_account, spec.mount_token, spec.grace_seconds) == ("worker", False, 5)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("64Mi", 64 * 2**20), ("1G", 10**9), ("500000", 500000), ("1.5Gi", int(1.5 * 2**30)), (None, None)],
)
def test_memory_quantities_in_bytes(quantity: str | None, expected: int | None) -> None:
    assert pods.memory_bytes(quantity) == expected


def test_a_memory_limit_that_is_no_quantity_makes_the_pod_unrunnable() -> None:
    with pytest.raises(pods.PodNotRunnable, match="not a Kubernetes quantity"):
        pods.container_spec(pod(resources={"limits": {"memory": "lots"}}))


def test_a_container_without_command_has_no_argv_for_the_process_runtime() -> None:
    spec = pods.container_spec(pod(command=[], args=["--help"]))
    assert spec.args == ["--help"]  # an image runtime runs its entry point with these
    with pytest.raises(pods.PodNotRunnable, match="no command"):
        spec.argv  # noqa: B018


def test_termination_message_prefers_the_file_and_falls_back_to_logs_on_failure() -> None:
    logs = "\n".join(f"line {i}" for i in range(200))
    assert pods.termination_message('{"outcome": "Failed"}\n', logs, 3, "FallbackToLogsOnError") == (
        '{"outcome": "Failed"}'
    )
    fallback = pods.termination_message("", logs, 3, "FallbackToLogsOnError")
    assert fallback.splitlines() == [f"line {i}" for i in range(120, 200)]
    assert pods.termination_message("", logs, 0, "FallbackToLogsOnError") == ""
    assert pods.termination_message("", logs, 3, "File") == ""
    assert len(pods.termination_message("x" * 10_000, "", 0, "File")) == pods.MESSAGE_LIMIT


def test_exit_outcome_maps_codes_signals_and_oom_like_a_container_runtime() -> None:
    assert pods.exit_outcome(0, "m") == Outcome(0, "Completed", "m")
    assert pods.exit_outcome(5, "") == Outcome(5, "Error", "")
    assert pods.exit_outcome(-15, "") == Outcome(143, "Error", "", 15)
    assert pods.exit_outcome(137, "", oom_killed=True) == Outcome(137, "OOMKilled", "")


def test_terminated_status_reports_exit_code_reason_and_message() -> None:
    ok = pods.terminated_status(pod(), Outcome(0, "Completed", '{"outcome":"Succeeded"}'), "t0", "t1")
    assert ok["phase"] == "Succeeded"
    state = ok["containerStatuses"][0]["state"]["terminated"]
    assert state == {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": "t0",
        "finishedAt": "t1",
        "message": '{"outcome":"Succeeded"}',
    }
    oom = pods.terminated_status(pod(), Outcome(137, "OOMKilled"), "t0", "t1")
    assert oom["phase"] == "Failed"
    assert oom["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    killed = pods.terminated_status(pod(), pods.exit_outcome(-15, ""), "t0", "t1")
    assert killed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143


def test_running_status_names_the_container() -> None:
    status = pods.running_status(pod(), "t0")
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["name"] == "worker"
    assert status["containerStatuses"][0]["state"] == {"running": {"startedAt": "t0"}}


def test_a_pod_waiting_on_its_config_stays_pending() -> None:
    status = pods.waiting_status(pod(), "CreateContainerConfigError", 'secret "s3" not found')
    assert status["phase"] == "Pending"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "CreateContainerConfigError", "message": 'secret "s3" not found'}


def test_only_pending_pods_not_being_deleted_are_started() -> None:
    assert pods.is_pending(pod())
    assert not pods.is_pending({**pod(), "status": {"phase": "Running"}})
    deleting = pod()
    deleting["metadata"]["deletionTimestamp"] = "t"
    assert not pods.is_pending(deleting)
