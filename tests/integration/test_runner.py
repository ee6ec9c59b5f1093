"""The local job runner plays kubelet + Job controller for the emulator, as docs/contracts.md says."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from crawljob import kube
from crawljob.operator.jobs import JobFeatures, build_job
from crawljob.operator.settings import OperatorSettings
from fakes.stack import FAKE_WORKER, NAMESPACE, crawljob, running_runner, wait_until

pytestmark = pytest.mark.timeout(60)

SETTINGS = OperatorSettings(worker_command=(sys.executable, str(FAKE_WORKER)), job_ttl_seconds=None)


async def _submit(client: kube.KubeClient, key: str, **spec: Any) -> str:
    """Create a CrawlJob (for the owner uid) and its Job as the operator would; the Job's name."""
    owner = await client.create(kube.CRAWLJOBS, NAMESPACE, crawljob(key, **spec))
    job = build_job(owner, SETTINGS, JobFeatures(indexed=True))
    await client.create(kube.JOBS, NAMESPACE, job)
    return str(job["metadata"]["name"])


async def _finished(client: kube.KubeClient, name: str, timeout: float = 30) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = await client.get(kube.JOBS, NAMESPACE, name)
        conditions = (job.get("status") or {}).get("conditions") or []
        return (
            job
            if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)
            else None
        )

    job: dict[str, Any] = await wait_until(check, timeout, f"Job {name} finished")
    return job


async def _pods(client: kube.KubeClient, job_name: str) -> list[dict[str, Any]]:
    return await client.list(kube.PODS, NAMESPACE, {"job-name": job_name})


async def test_successful_job_gets_a_pod_with_termination_message_and_complete_status(
    kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    async with running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}):
        name = await _submit(kube_client, "runner/ok-3.csv")
        job = await _finished(kube_client, name)
    status = job["status"]
    assert status["succeeded"] == 1 and status["active"] == 0
    assert status["startTime"] and status["completionTime"]
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in status["conditions"])
    (pod,) = await _pods(kube_client, name)
    labels = pod["metadata"]["labels"]
    uid = job["metadata"]["uid"]
    assert pod["metadata"]["name"].startswith(name + "-") and len(pod["metadata"]["name"]) == len(name) + 6
    assert labels["batch.kubernetes.io/job-name"] == name and labels["controller-uid"] == uid
    assert labels["batch.kubernetes.io/controller-uid"] == uid
    assert labels["crawljob.io/crawljob"] == name  # the template's labels are kept
    assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert terminated["startedAt"] and terminated["finishedAt"]
    assert json.loads(terminated["message"])["rowsRead"] == 3
    assert (tmp_path / "runs.log").read_text().split() == [name]  # CRAWLJOB_NAME from the container env


async def test_failjob_exit_code_is_not_retried_and_others_are_until_the_backoff_limit(
    kube_client: kube.KubeClient,
) -> None:
    async with running_runner(kube_client):
        permanent = await _submit(kube_client, "runner/exit-4.csv", backoffLimit=3)
        transient = await _submit(kube_client, "runner/exit-75.csv", backoffLimit=2)
        failed_permanent = await _finished(kube_client, permanent)
        failed_transient = await _finished(kube_client, transient)
    condition = failed_permanent["status"]["conditions"][-1]
    assert (condition["type"], condition["reason"]) == ("Failed", "PodFailurePolicy")
    assert failed_permanent["status"]["failed"] == 1
    assert len(await _pods(kube_client, permanent)) == 1
    condition = failed_transient["status"]["conditions"][-1]
    assert (condition["type"], condition["reason"]) == ("Failed", "BackoffLimitExceeded")
    assert failed_transient["status"]["failed"] == 3
    pods = await _pods(kube_client, transient)
    assert len(pods) == 3
    assert {pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for pod in pods} == {75}


def _processes_with(marker: str) -> list[int]:
    """Pids of local processes whose command line contains *marker* (the fake worker's source key)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(marker in part for part in process.info["cmdline"] or []):
            found.append(process.info["pid"])
    return found


async def test_deadline_deletes_the_pod_stops_the_process_and_fails_the_job(
    kube_client: kube.KubeClient,
) -> None:
    async with running_runner(kube_client):
        name = await _submit(kube_client, "runner/sleep-31.csv", activeDeadlineSeconds=1)
        job = await _finished(kube_client, name, timeout=15)

        async def stopped() -> bool:
            return not _processes_with("runner/sleep-31.csv")

        await wait_until(stopped, 15, "the kubelet to stop the process past its deadline")
    assert job["status"]["conditions"][-1]["reason"] == "DeadlineExceeded"
    assert job["status"]["failed"] == 1
    assert await _pods(kube_client, name) == []  # as the Job controller does: the active Pod is deleted


async def test_deleted_job_kills_its_process_and_pods(kube_client: kube.KubeClient, tmp_path: Path) -> None:
    async with running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}):
        name = await _submit(kube_client, "runner/sleep-32.csv")

        async def running() -> bool:
            pods = await _pods(kube_client, name)
            return bool(pods) and pods[0]["status"].get("phase") == "Running"

        await wait_until(running, 15, "pod running")
        assert _processes_with("runner/sleep-32.csv")
        await kube_client.delete(kube.JOBS, NAMESPACE, name)

        async def cleaned() -> bool:
            return not await _pods(kube_client, name) and not _processes_with("runner/sleep-32.csv")

        await wait_until(cleaned, 15, "pods deleted and process stopped")


async def test_instant_mode_completes_without_running_anything(kube_client: kube.KubeClient) -> None:
    async with running_runner(kube_client, mode="instant"):
        name = await _submit(kube_client, "runner/exit-3.csv")
        job = await _finished(kube_client, name)
    assert job["status"]["succeeded"] == 1
    (pod,) = await _pods(kube_client, name)
    message = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert json.loads(message)["outcome"] == "Succeeded"


async def test_suspended_jobs_are_left_alone(kube_client: kube.KubeClient) -> None:
    owner = await kube_client.create(kube.CRAWLJOBS, NAMESPACE, crawljob("runner/ok-1.csv"))
    job = build_job(owner, SETTINGS)
    job["spec"]["suspend"] = True
    await kube_client.create(kube.JOBS, NAMESPACE, job)
    async with running_runner(kube_client):
        # A Job created after the suspended one finishing proves the runner has seen both.
        await _finished(kube_client, await _submit(kube_client, "runner/ok-2.csv"))
        assert await _pods(kube_client, job["metadata"]["name"]) == []
    stored = await kube_client.get(kube.JOBS, NAMESPACE, job["metadata"]["name"])
    assert not (stored.get("status") or {}).get("startTime")  # never started


async def test_an_indexed_job_runs_each_index_and_retries_a_killed_one_alone(
    kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    async with running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}):
        name = await _submit(kube_client, "runner/flakyshard-1.csv", shards=3, backoffLimit=2)
        job = await _finished(kube_client, name)
    status = job["status"]
    assert status["succeeded"] == 3 and status["failed"] == 1 and status["completedIndexes"] == "0-2"
    pods = await _pods(kube_client, name)
    indexes = sorted(
        pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for pod in pods
    )
    assert indexes == ["0", "1", "1", "2"]  # index 1 ran again; 0 and 2 did not
