"""Every Job the operator renders is valid Kubernetes, keeps the Job contract and runs hardened.

`job_problems` states the checks once: the contract of docs/contracts.md ("Job"), the Kubernetes
schema (offline, strict) and the pod hardening the chart promises for all three workloads.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from chart_render import KUBERNETES_VERSION

Manifest = dict[str, Any]


def job_problems(job: Manifest, crawljob_name: str) -> list[str]:
    """What is wrong with an operator-made Job (empty when it is fine)."""
    problems = []
    try:
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        problems.append(f"schema: {error.message} at {'/'.join(map(str, error.path))}")
    metadata = job["metadata"]
    if metadata.get("name") != crawljob_name:
        problems.append("metadata.name must be the CrawlJob's name")
    labels = metadata.get("labels", {})
    for key, value in {
        "app.kubernetes.io/name": "crawljob",
        "app.kubernetes.io/managed-by": "crawljob-operator",
        "crawljob.io/crawljob": crawljob_name,
    }.items():
        if labels.get(key) != value:
            problems.append(f"label {key} must be {value!r}")
    owners = metadata.get("ownerReferences", [])
    if len(owners) != 1 or not (
        owners[0].get("kind") == "CrawlJob"
        and owners[0].get("name") == crawljob_name
        and owners[0].get("controller") is True
        and owners[0].get("blockOwnerDeletion") is True
    ):
        problems.append("one controlling owner reference to the CrawlJob")
    pod = job["spec"]["template"]["spec"]
    if pod.get("restartPolicy") != "Never":
        problems.append("restartPolicy must be Never")
    containers = pod.get("containers", [])
    if [c.get("name") for c in containers] != ["worker"]:
        problems.append("exactly one container named worker")
        return problems
    (worker,) = containers
    if worker.get("command") != ["crawljob-worker"]:
        problems.append("command must be ['crawljob-worker']")
    if worker.get("terminationMessagePath") != "/dev/termination-log":
        problems.append("terminationMessagePath must be /dev/termination-log")
    if worker.get("terminationMessagePolicy") != "FallbackToLogsOnError":
        problems.append("terminationMessagePolicy must be FallbackToLogsOnError")
    env = {item["name"] for item in worker.get("env", [])}
    if not {"CRAWLJOB_NAME", "CRAWLJOB_NAMESPACE"} <= env:
        problems.append("env must carry CRAWLJOB_NAME and CRAWLJOB_NAMESPACE")
    pod_context = pod.get("securityContext", {})
    if pod_context.get("runAsNonRoot") is not True:
        problems.append("pod securityContext.runAsNonRoot must be true")
    context = worker.get("securityContext", {})
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("worker readOnlyRootFilesystem must be true")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("worker allowPrivilegeEscalation must be false")
    if "ALL" not in context.get("capabilities", {}).get("drop", []):
        problems.append("worker must drop ALL capabilities")
    seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        problems.append("seccompProfile must be RuntimeDefault")
    resources = worker.get("resources", {})
    if not (
        {"cpu", "memory"} <= set(resources.get("requests", {})) and "memory" in resources.get("limits", {})
    ):
        problems.append("worker needs cpu/memory requests and a memory limit")
    return problems


def contract_job(name: str = "day1-3f9c2a1b7e") -> Manifest:
    """A Job exactly as docs/contracts.md describes it, with the chart's hardening."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "crawls",
            "labels": {
                "app.kubernetes.io/name": "crawljob",
                "app.kubernetes.io/managed-by": "crawljob-operator",
                "crawljob.io/crawljob": name,
            },
            "ownerReferences": [
                {
                    "apiVersion": "crawljob.io/v1alpha1",
                    "kind": "CrawlJob",
                    "name": name,
                    "uid": "0b7c6f5e-1d2a-4c3b-9e8f-7a6b5c4d3e2f",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 3,
            "podFailurePolicy": {
                "rules": [
                    {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 3, 4, 5, 6]}},
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": {"crawljob.io/crawljob": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": "crawljob-worker",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "worker",
                            "image": "crawljob/crawljob-worker:0.1.0",
                            "command": ["crawljob-worker"],
                            "args": [
                                "s3://uploads/day1.csv",
                                "--output",
                                f"s3://uploads/crawljob-output/{name}/",
                            ],
                            "env": [
                                {"name": "CRAWLJOB_NAME", "value": name},
                                {"name": "CRAWLJOB_NAMESPACE", "value": "crawls"},
                            ],
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "512Mi"},
                                "limits": {"cpu": "2", "memory": "1Gi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def test_a_job_as_the_contract_describes_it_passes() -> None:
    assert job_problems(contract_job(), "day1-3f9c2a1b7e") == []


@pytest.mark.parametrize(
    ("break_it", "problem"),
    [
        (lambda job: job["spec"].update(backoffLimit="3"), "schema:"),
        (lambda job: job["spec"]["template"]["spec"].update(restartPolicy="OnFailure"), "restartPolicy"),
        (lambda job: job["metadata"]["ownerReferences"][0].update(controller=False), "owner reference"),
        (lambda job: job["spec"]["template"]["spec"]["containers"][0].pop("securityContext"), "readOnlyRoot"),
        (lambda job: job["spec"]["template"]["spec"]["containers"][0]["env"].pop(), "CRAWLJOB_NAMESPACE"),
    ],
)
def test_job_check_catches_contract_breaks(break_it: Any, problem: str) -> None:
    job = copy.deepcopy(contract_job())
    break_it(job)
    assert any(problem in found for found in job_problems(job, "day1-3f9c2a1b7e"))
