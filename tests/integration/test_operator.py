"""The operator (a real `crawljob operator` process) against the emulator, with the local job runner."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from crawljob import kube
from crawljob.local.emulator import Emulator
from crawljob.models import JobStatus
from crawljob.operator import workload
from fakes.recording import Call, recording_emulator
from fakes.stack import (
    NAMESPACE,
    crawljob,
    events_of,
    running_operator,
    running_runner,
    wait_phase,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


async def test_crawljob_runs_to_succeeded_with_the_workers_result(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = crawljob("in/ok-42.csv")
    name = body["metadata"]["name"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flags = {"health-port": port, "log-format": "json"}
    async with (
        running_runner(kube_client),
        running_operator(emulator[1], tmp_path / "operator.log", **flags),
        aiohttp.ClientSession() as http,
    ):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        done = await wait_phase(kube_client, name, {"Succeeded", "Failed"})
        async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
            assert health.status == 200
            assert (await health.json())["role"] == "active"
        async with http.get(f"http://127.0.0.1:{port}/readyz") as ready:
            assert ready.status == 200
        async with http.get(f"http://127.0.0.1:{port}/metrics") as metrics:
            text = await metrics.text()
        assert 'crawljob_transitions_total{phase="Succeeded",reason="Completed"} 1.0' in text
        assert "crawljob_jobs_created_total 1.0" in text
        # Rows and bytes of the successful run; the phase gauge is current at once (the resync
        # runs every 2 s here, so a gauge refreshed only by it would often still say Running).
        assert 'crawljob_rows_total{outcome="written"} 42.0' in text
        assert 'crawljob_rows_total{outcome="rejected"} 0.0' in text
        assert "crawljob_bytes_read_total 420.0" in text
        assert 'crawljob_crawljobs{phase="Succeeded"} 1.0' in text
        assert 'crawljob_crawljobs{phase="Running"} 0.0' in text
        assert "crawljob_replica_active 1.0" in text
        # One prefix scheme: every metric the operator exports starts with crawljob_, none with
        # crawljob_operator_ (the receiver's are crawljob_receiver_).
        names = {line.split("{")[0].split()[0] for line in text.splitlines() if line and line[0] != "#"}
        assert names and all(
            n.startswith("crawljob_") and not n.startswith("crawljob_operator_") for n in names
        )
        # The watch telemetry of health.py, next to the run's metrics; kopf's run never restarted.
        assert 'crawljob_watch_event_age_seconds{resource="jobs"}' in text
        assert 'crawljob_watch_restarts_total{reason="started",resource="jobs.v1.batch"} 1.0' in text
        assert "crawljob_kopf_run_restarts_total 0.0" in text
    lines = [
        json.loads(line)
        for line in (tmp_path / "operator.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(line.get("crawljob") == name and line.get("phase") == "Succeeded" for line in lines)
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"]["rowsRead"] == 42
    assert status["jobName"] == name
    assert status["attempts"] == 1
    job = await kube_client.get(kube.JOBS, NAMESPACE, name)
    assert job["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]


async def test_every_failure_reason_of_a_running_worker_is_surfaced(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    cases = {
        "exit-2": ("InvalidArguments", "arguments or configuration", 1),
        "exit-3": ("BadInput", "not readable CSV", 1),
        "exit-4": ("SourceNotFound", "missing or access to it was denied", 1),
        "exit-5": ("RejectThresholdExceeded", "maxRejectRatio", 1),
        "exit-6": ("OutputForbidden", "cannot write to the output", 1),
        "exit-75": ("BackoffLimitExceeded", "unreachable or throttled", 2),
        "crash": ("BackoffLimitExceeded", "crashed with exit code 1", 2),
        "sleep-30": ("DeadlineExceeded", "activeDeadlineSeconds=2", None),
    }
    bodies = {
        case: crawljob(
            f"fail/{case}.csv", backoffLimit=1, activeDeadlineSeconds=2 if case == "sleep-30" else 60
        )
        for case in cases
    }
    async with (
        running_runner(kube_client, max_parallel=8),
        running_operator(emulator[1], tmp_path / "op.log"),
    ):
        for body in bodies.values():
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        finished = {
            case: await wait_phase(kube_client, body["metadata"]["name"], {"Succeeded", "Failed"}, timeout=60)
            for case, body in bodies.items()
        }
        events = {
            case: await events_of(kube_client, body["metadata"]["name"]) for case, body in bodies.items()
        }

        async def labelled() -> dict[str, dict[str, str]] | None:
            found = {
                case: {
                    key: value
                    for key, value in (
                        await kube_client.get(kube.CRAWLJOBS, NAMESPACE, body["metadata"]["name"])
                    )["metadata"]["labels"].items()
                    if key.startswith("crawljob.io/")
                }
                for case, body in bodies.items()
            }
            return (
                found if all(item.get("crawljob.io/phase") == "Failed" for item in found.values()) else None
            )

        labels = await wait_until(labelled, 10, "the phase labels")
    for case, (reason, words, attempts) in cases.items():
        got = finished[case]["status"]
        assert got["phase"] == "Failed", (case, got)
        assert got["reason"] == reason, (case, got)
        assert words in got["message"], (case, got["message"])
        if attempts is not None:
            assert got["attempts"] == attempts, (case, got)
        failed = next(item for item in got["conditions"] if item["type"] == "Failed")
        assert failed["status"] == "True" and failed["reason"] == reason
        warnings = [event for event in events[case] if event["type"] == "Warning"]
        assert any(event["reason"] == reason for event in warnings), (case, events[case])
        if attempts == 1:  # permanent: podFailurePolicy fails the Job, so nothing says "Retrying"
            assert not [event for event in events[case] if event["reason"] == "Retrying"], events[case]
            assert not [event for event in warnings if event["reason"] != reason], events[case]
        # The operator keeps the phase label in step with the phase.
        assert labels[case] == {"crawljob.io/phase": "Failed", "crawljob.io/bucket": "bucket"}, labels[case]


async def test_retry_success_and_bad_termination_messages(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    flaky, garbage, truncated = (
        crawljob(f"msg/{stem}.csv") for stem in ("flaky_ok-7", "garbage", "truncated")
    )
    async with (
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}),
        running_operator(emulator[1], tmp_path / "op.log"),
    ):
        for body in (flaky, garbage, truncated):
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        retried = await wait_phase(kube_client, flaky["metadata"]["name"], {"Succeeded", "Failed"})
        invalid = await wait_phase(kube_client, garbage["metadata"]["name"], {"Succeeded", "Failed"})
        cut = await wait_phase(kube_client, truncated["metadata"]["name"], {"Succeeded", "Failed"})
    assert retried["status"]["phase"] == "Succeeded"
    assert retried["status"]["attempts"] == 2
    assert retried["status"]["result"]["rowsRead"] == 7
    for body, words in ((invalid, "invalid JSON"), (cut, "truncated JSON")):
        assert body["status"]["phase"] == "Succeeded"
        assert body["status"]["reason"] == "ResultUnavailable"
        assert words in body["status"]["message"]
        assert "result" not in body["status"]
    transitions = [event["reason"] for event in await events_of(kube_client, retried["metadata"]["name"])]
    assert "JobCreated" in transitions and "Completed" in transitions


async def _job_of(client: kube.KubeClient, name: str) -> dict[str, Any]:
    async def exists() -> dict[str, Any] | None:
        try:
            return await client.get(kube.JOBS, NAMESPACE, name)
        except kube.NotFound:
            return None

    job: dict[str, Any] = await wait_until(exists, 20, f"Job {name}")
    return job


def _pod_body(job: dict[str, Any], suffix: str, status: dict[str, Any]) -> dict[str, Any]:
    name = job["metadata"]["name"]
    labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": name}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-{suffix}", "namespace": NAMESPACE, "labels": labels},
        "spec": job["spec"]["template"]["spec"],
        "status": status,
    }


async def test_cluster_only_states_are_surfaced_while_pending_and_at_the_end(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    """States the local runner cannot produce, written into the emulator as a cluster would."""
    waiting = {
        "ImagePullBackOff": "cannot be pulled",
        "ErrImagePull": "cannot be pulled",
        "CreateContainerConfigError": "configuration is invalid",
    }
    bodies = {reason: crawljob(f"sim/{reason.lower()}.csv") for reason in [*waiting, "oom"]}
    async with running_operator(emulator[1], tmp_path / "op.log"):
        for body in bodies.values():
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        for reason, words in waiting.items():
            job = await _job_of(kube_client, bodies[reason]["metadata"]["name"])
            await kube_client.patch(
                kube.JOBS, NAMESPACE, job["metadata"]["name"], {"status": {"active": 1}}, "status"
            )
            state = {"waiting": {"reason": reason, "message": "details from the kubelet"}}
            pod = _pod_body(
                job, "abcde", {"phase": "Pending", "containerStatuses": [{"name": "worker", "state": state}]}
            )
            await kube_client.create(kube.PODS, NAMESPACE, pod)

            async def surfaced(name: str = job["metadata"]["name"], reason: str = reason) -> bool:
                got = (await kube_client.get(kube.CRAWLJOBS, NAMESPACE, name)).get("status") or {}
                return got.get("phase") == "Pending" and got.get("reason") == reason

            await wait_until(surfaced, 20, f"{reason} surfaced")
            got = (await kube_client.get(kube.CRAWLJOBS, NAMESPACE, job["metadata"]["name"]))["status"]
            assert words in got["message"] and "details from the kubelet" in got["message"]

            # The Event is written just after the status: wait for it rather than race it.
            async def announced(name: str = job["metadata"]["name"], reason: str = reason) -> bool:
                return any(
                    event["reason"] == reason and event["type"] == "Warning"
                    for event in await events_of(kube_client, name)
                )

            await wait_until(announced, 20, f"{reason} Event")
        job = await _job_of(kube_client, bodies["oom"]["metadata"]["name"])
        terminated = {
            "terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-01-01T00:00:00Z"}
        }
        pod = _pod_body(
            job, "oomkd", {"phase": "Failed", "containerStatuses": [{"name": "worker", "state": terminated}]}
        )
        await kube_client.create(kube.PODS, NAMESPACE, pod)
        failed = {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "lastTransitionTime": "2026-01-01T00:00:01Z",
        }
        await kube_client.patch(
            kube.JOBS,
            NAMESPACE,
            job["metadata"]["name"],
            {"status": {"failed": 1, "conditions": [failed]}},
            "status",
        )
        oom = await wait_phase(kube_client, job["metadata"]["name"], {"Failed"})
    assert oom["status"]["reason"] == "OOMKilled"
    assert "ran out of memory" in oom["status"]["message"]


def _job_concurrency(calls: list[Call]) -> tuple[int, list[str]]:
    """(most Jobs unfinished at once, Job names in creation order), read from the API's request log.

    The log is the order the API server saw: a Job counts from its creation (POST) until a status
    write saying it finished (Complete/Failed) or its deletion; an overshoot of the cap, however
    short, shows up here.
    """
    unfinished: set[str] = set()
    created: list[str] = []
    most = 0
    for call in calls:
        parts = call.path.rstrip("/").split("/")
        if "jobs" not in parts:
            continue
        after = parts[parts.index("jobs") + 1 :]
        if call.method == "POST" and not after:
            name = str(call.data["metadata"]["name"])
            if name not in created:
                created.append(name)
            unfinished.add(name)
            most = max(most, len(unfinished))
        elif call.method in {"PATCH", "PUT"} and after[1:] == ["status"] and isinstance(call.data, dict):
            if workload.job_finished(JobStatus.parse(call.data)):
                unfinished.discard(after[0])
        elif call.method == "DELETE" and len(after) == 1:
            unfinished.discard(after[0])
    return most, created


def _queue_positions_written(calls: list[Call]) -> set[str]:
    """CrawlJobs whose status was patched with a queue position (from the request log)."""
    written = set()
    for call in calls:
        parts = call.path.rstrip("/").split("/")
        if not ("crawljobs" in parts and parts[-1] == "status" and isinstance(call.data, dict)):
            continue
        if "position" in str((call.data.get("status") or {}).get("message") or ""):
            written.add(parts[parts.index("crawljobs") + 1])
    return written


async def test_concurrency_cap_holds_over_time_and_queue_is_fifo(tmp_path: Path) -> None:
    bodies = [crawljob(f"cap/q{index:02d}_sleep-0.2.csv") for index in range(30)]
    names = [body["metadata"]["name"] for body in bodies]
    async with (
        recording_emulator() as (emulator, url),
        kube.KubeClient(kube.Connection(server=url)) as client,
        running_runner(client, max_parallel=8),
        running_operator(url, tmp_path / "op.log", **{"max-active": 3}),
    ):
        for body in bodies:
            await client.create(kube.CRAWLJOBS, NAMESPACE, body)
        for name in names:
            await wait_phase(client, name, {"Succeeded", "Failed"}, timeout=90)
    most, created = _job_concurrency(emulator.calls)
    assert most == 3  # the cap is reached and never exceeded, not even for a moment
    assert created == sorted(names) == names  # creation order (same-second ties by name)
    assert len(_queue_positions_written(emulator.calls)) >= 20  # most waited in Queued with a position


def test_the_request_log_reading_sees_an_overshoot() -> None:
    """_job_concurrency counts what a sampler could miss: a 4th Job created a moment before one ended."""

    def call(method: str, path: str, data: Any) -> Call:
        return Call(0.0, method, f"/apis/batch/v1/namespaces/default{path}", "test", data)

    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    log = [call("POST", "/jobs", {"metadata": {"name": name}}) for name in "abcd"]
    log += [call("PATCH", f"/jobs/{name}/status", done) for name in "abcd"]
    assert _job_concurrency(log) == (4, ["a", "b", "c", "d"])
    assert _job_concurrency([log[0], log[1], log[2], log[4], log[3]])[0] == 3


async def test_deleting_a_crawljob_cancels_its_job_and_pods(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = crawljob("cancel/sleep-60.csv")
    name = body["metadata"]["name"]
    async with (
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}),
        running_operator(emulator[1], tmp_path / "op.log"),
    ):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        await wait_phase(kube_client, name, {"Running"})
        assert await kube_client.list(kube.PODS, NAMESPACE, {"job-name": name})
        worker = psutil.Process(int(await wait_until(lambda: _read(tmp_path / f"pid-{name}"), 10, "pid")))
        assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
        await kube_client.delete(kube.CRAWLJOBS, NAMESPACE, name)

        async def gone() -> bool:
            jobs = await kube_client.list(kube.JOBS, NAMESPACE)
            pods = await kube_client.list(kube.PODS, NAMESPACE, {"job-name": name})
            return not jobs and not pods

        await wait_until(gone, 20, "Job and Pods deleted")

        async def stopped() -> bool:
            try:
                return not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        await wait_until(stopped, 20, "the cancelled worker process to stop")


async def _read(path: Path) -> str | None:
    try:
        return await asyncio.to_thread(path.read_text)
    except FileNotFoundError:
        return None


async def test_a_job_deleted_behind_the_operators_back_fails_the_crawljob(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = crawljob("lost/sleep-60.csv")
    name = body["metadata"]["name"]
    async with running_runner(kube_client), running_operator(emulator[1], tmp_path / "op.log"):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        await wait_phase(kube_client, name, {"Running"})
        await kube_client.delete(kube.JOBS, NAMESPACE, name)
        failed = await wait_phase(kube_client, name, {"Failed", "Succeeded"})
    assert failed["status"]["phase"] == "Failed"
    assert failed["status"]["reason"] == "JobDeleted"


async def test_rerun_annotation_starts_a_new_run_of_a_finished_crawljob(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = crawljob("again/ok-5.csv")
    name = body["metadata"]["name"]
    async with running_runner(kube_client), running_operator(emulator[1], tmp_path / "op.log"):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        first = await wait_phase(kube_client, name, {"Succeeded"})
        await kube_client.patch(
            kube.CRAWLJOBS, NAMESPACE, name, {"metadata": {"annotations": {"crawljob.io/rerun": "one"}}}
        )

        async def second_run_done() -> dict[str, Any] | None:
            got = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, name)
            status = got.get("status") or {}
            return got if status.get("run") == 2 and status.get("phase") == "Succeeded" else None

        second = await wait_until(second_run_done, 30, "second run Succeeded")
        job_names = {job["metadata"]["name"] for job in await kube_client.list(kube.JOBS, NAMESPACE)}
    assert first["status"]["jobName"] == name
    assert second["status"]["jobName"] == f"{name}-r2"
    assert second["status"]["rerunToken"] == "one"
    assert second["status"]["result"]["rowsRead"] == 5
    assert job_names == {f"{name}-r2"}  # the first run's Job was deleted
    reasons = [event["reason"] for event in await events_of(kube_client, name)]
    assert reasons.count("Completed") == 2 and "Rerun" in reasons


async def test_finished_crawljobs_are_garbage_collected_by_history_limit_and_ttl(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    ok = [crawljob(f"gc/ok-{index}.csv") for index in range(3)]
    bad = [crawljob(f"gc/exit-{code}.csv") for code in (3, 4)]
    flags = {"successful-history-limit": 1, "failed-history-limit": 0, "resync-seconds": 1}
    async with running_runner(kube_client), running_operator(emulator[1], tmp_path / "op.log", **flags):
        for body in ok + bad:
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)

        async def collected() -> list[dict[str, Any]] | None:
            items = await kube_client.list(kube.CRAWLJOBS, NAMESPACE)
            return items if len(items) == 1 else None

        (kept,) = await wait_until(collected, 30, "history limits applied")
    assert kept["status"]["phase"] == "Succeeded"
