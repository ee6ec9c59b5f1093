"""The real Job controller and garbage collector, with the local kubelet running the Pods."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import psutil

from crawljob import kube, resource
from fakes.waiting import wait_for

from .conftest import Child


def job(name: str, code: str, *, backoff_limit: int = 0, **spec: Any) -> dict[str, Any]:
    """A batch/v1 Job running *code* with the venv's Python, as the operator's Jobs run the worker."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {resource.LABEL_CRAWLJOB: name}},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "worker",
                            "image": "crawljob-worker:local",
                            "command": [sys.executable, "-c", code],
                            "args": ["$(CRAWLJOB_NAME)"],
                            "env": [
                                {"name": "CRAWLJOB_NAME", "value": name},
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                }
            },
            **spec,
        },
    }


WRITE_SUMMARY = (
    "import json, os, sys\n"
    "summary = {'outcome': 'Succeeded', 'exitCode': 0, 'rowsWritten': 7, 'name': sys.argv[1],"
    " 'pod': os.environ['POD_NAME']}\n"
    "open(os.environ['CRAWLJOB_TERMINATION_LOG'], 'w').write(json.dumps(summary))\n"
)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind and item["status"] == "True":
            return dict(item)
    return None


async def job_pods(client: kube.KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    return await client.list(kube.PODS, namespace, labels={"job-name": name})


async def wait_job_condition(client: kube.KubeClient, namespace: str, name: str, kind: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        current = await client.get(kube.JOBS, namespace, name)
        return current if condition(current, kind) else None

    result: dict[str, Any] = await wait_for(reached, timeout=60, what=f"Job {name} {kind}")
    return result


async def test_job_controller_creates_the_pod_and_completes_the_job(
    client: kube.KubeClient, namespace: str, kubelet: Child
) -> None:
    kubelet.start()
    await client.create(kube.JOBS, namespace, job("summary", WRITE_SUMMARY))
    done = await wait_job_condition(client, namespace, "summary", "Complete")
    assert done["status"]["succeeded"] == 1
    assert done["status"]["completionTime"]
    [pod] = await job_pods(client, namespace, "summary")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    summary = json.loads(terminated["message"])
    assert summary == {
        "outcome": "Succeeded",
        "exitCode": 0,
        "rowsWritten": 7,
        "name": "summary",  # $(CRAWLJOB_NAME) expanded in args
        "pod": pod["metadata"]["name"],  # downward API
    }


async def test_failing_pod_fails_the_job_with_backoff_limit_exceeded(
    client: kube.KubeClient, namespace: str, kubelet: Child
) -> None:
    kubelet.start()
    code = "import sys; print('bad input: not a CSV'); sys.exit(3)"
    await client.create(kube.JOBS, namespace, job("bad", code, backoff_limit=1))
    failed = await wait_job_condition(client, namespace, "bad", "Failed")
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
    pods = await job_pods(client, namespace, "bad")
    assert len(pods) == 2  # one retry, as backoffLimit 1 allows
    for pod in pods:
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
        assert terminated["message"] == "bad input: not a CSV"  # FallbackToLogsOnError


async def test_deleting_the_crawljob_cancels_its_job_through_the_garbage_collector(
    client: kube.KubeClient, namespace: str, kubelet: Child
) -> None:
    kubelet.start()
    marker = f"crawljob-test-{uuid.uuid4().hex}"
    ref = resource.ObjectRef(bucket="landing", key="big.csv", etag="e1")
    name = resource.crawljob_name(ref)
    owner = await client.create(kube.CRAWLJOBS, namespace, resource.crawljob_manifest(ref, namespace))
    body = job(name, f"import time  # {marker}\ntime.sleep(600)")
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "name": name,
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    await client.create(kube.JOBS, namespace, body)

    async def running() -> bool:
        pods = await job_pods(client, namespace, name)
        return bool(pods) and pods[0]["status"].get("phase") == "Running"

    await wait_for(running, timeout=60, what="the worker pod to run")
    assert processes_with(marker)

    await client.delete(kube.CRAWLJOBS, namespace, name, propagation="Foreground")

    async def all_gone() -> bool:
        for res in (kube.CRAWLJOBS, kube.JOBS):
            try:
                await client.get(res, namespace, name)
                return False
            except kube.NotFound:
                pass
        return not await job_pods(client, namespace, name)

    await wait_for(all_gone, timeout=60, what="the garbage collector to delete the Job and its Pod")

    async def process_ended() -> bool:
        return not processes_with(marker)

    await wait_for(process_ended, timeout=30, what="the kubelet to stop the cancelled process")


async def test_active_deadline_fails_the_job_and_stops_the_process(
    client: kube.KubeClient, namespace: str, kubelet: Child
) -> None:
    kubelet.start()
    marker = f"crawljob-test-{uuid.uuid4().hex}"
    await client.create(
        kube.JOBS,
        namespace,
        job("slow", f"import time  # {marker}\ntime.sleep(600)", activeDeadlineSeconds=3),
    )
    failed = await wait_job_condition(client, namespace, "slow", "Failed")
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]

    async def process_ended() -> bool:
        return not processes_with(marker)

    await wait_for(process_ended, timeout=30, what="the kubelet to stop the process past its deadline")


async def test_stopping_the_kubelet_stops_its_processes(
    client: kube.KubeClient, namespace: str, kubelet: Child
) -> None:
    kubelet.start()
    marker = f"crawljob-test-{uuid.uuid4().hex}"
    await client.create(kube.JOBS, namespace, job("orphan", f"import time  # {marker}\ntime.sleep(600)"))

    async def started() -> bool:
        return bool(processes_with(marker))

    await wait_for(started, timeout=60, what="the process to start")
    kubelet.stop()
    assert kubelet.process is not None and kubelet.process.returncode == 0
    assert not processes_with(marker)


async def test_fields_newer_than_the_server_are_dropped(client: kube.KubeClient, namespace: str) -> None:
    # Kubernetes 1.20 predates Job.spec.suspend, podFailurePolicy and completionMode, and has
    # ttlSecondsAfterFinished behind an alpha gate: it silently drops them. The operator's use of
    # them is covered by unit and emulator tests instead (docs/cluster.md).
    body = job("newer", "pass")
    body["spec"]["suspend"] = True
    body["spec"]["completionMode"] = "Indexed"
    body["spec"]["ttlSecondsAfterFinished"] = 60
    body["spec"]["podFailurePolicy"] = {
        "rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 3, 4, 5, 6]}}]
    }
    stored = await client.create(kube.JOBS, namespace, body)
    assert "suspend" not in stored["spec"]
    assert "podFailurePolicy" not in stored["spec"]
    assert "completionMode" not in stored["spec"]
    assert "ttlSecondsAfterFinished" not in stored["spec"]


def processes_with(marker: str) -> list[int]:
    """Pids of local processes whose command line contains *marker* (the kubelet's children)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(marker in part for part in process.info["cmdline"] or []):
            found.append(process.info["pid"])
    return found
