"""Sharded CrawlJobs on a server without Indexed Jobs: one Job per shard.

The emulator answers GET /version as Kubernetes 1.20 (`Emulator.server_version`), so the operator
process takes the per-shard path; the local job runner plays the Job controller, the fake worker
(tests/fakes/worker.py) each shard (`--shards N --shard-index I`; the last to finish finalizes).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crawljob import kube, resource
from crawljob.local.emulator import Emulator
from crawljob.operator import jobs
from crawljob.operator.settings import OperatorSettings
from fakes.stack import (
    FAKE_WORKER,
    NAMESPACE,
    OperatorProcess,
    count_job_creations,
    crawljob,
    events_of,
    running_operator,
    running_runner,
    wait_phase,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

FINISHED = {"Succeeded", "Failed", "Cancelled"}


@pytest.fixture
def old_server(emulator: tuple[Emulator, str]) -> str:
    """The emulator answering as Kubernetes 1.20 (no Indexed Jobs); its URL."""
    emulator[0].server_version = ("1", "20")
    return emulator[1]


def _finished(job: dict[str, Any]) -> bool:
    return any(
        item.get("type") in ("Complete", "Failed") and item.get("status") == "True"
        for item in (job.get("status") or {}).get("conditions") or []
    )


async def _shard_jobs(client: kube.KubeClient, name: str) -> dict[int, dict[str, Any]]:
    listed = await client.list(kube.JOBS, NAMESPACE, {resource.LABEL_CRAWLJOB: name})
    return {
        int(job["metadata"]["labels"][resource.LABEL_SHARD]): job
        for job in listed
        if resource.LABEL_SHARD in job["metadata"]["labels"]
    }


@contextlib.asynccontextmanager
async def _job_log(client: kube.KubeClient) -> AsyncIterator[list[tuple[str, str, bool]]]:
    """Every Job watch event in order, as (type, Job name, finished)."""
    seen: list[tuple[str, str, bool]] = []

    async def watch() -> None:
        async for event in client.watch(kube.JOBS, NAMESPACE):
            job = event["object"]
            seen.append((event["type"], job["metadata"]["name"], _finished(job)))

    task = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _most_unfinished_at_once(events: list[tuple[str, str, bool]], names: set[str]) -> int:
    unfinished: set[str] = set()
    most = 0
    for kind, name, finished in events:
        if name not in names:
            continue
        if kind == "DELETED" or finished:
            unfinished.discard(name)
        else:
            unfinished.add(name)
        most = max(most, len(unfinished))
    return most


async def test_a_sharded_crawljob_runs_one_job_per_shard_under_the_parallelism_and_holds_one_slot(
    old_server: str, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = crawljob("shards/data_sleep-0.5_ok-7.csv", shards=3)
    name = body["metadata"]["name"]
    after = crawljob("shards/after_ok-1.csv")
    expected = {jobs.shard_job_name(name, 1, index) for index in range(3)}
    async with (
        _job_log(kube_client) as events,
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}),
        running_operator(old_server, tmp_path / "op.log", **{"max-active": 1, "shard-parallelism": 2}),
    ):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        await wait_phase(kube_client, name, {"Running"})
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, after)
        queued = await wait_phase(kube_client, after["metadata"]["name"], {"Queued", "Running", "Succeeded"})
        done = await wait_phase(kube_client, name, FINISHED)
        await wait_phase(kube_client, after["metadata"]["name"], FINISHED)
        made = await _shard_jobs(kube_client, name)

        # A re-run makes the next run's shard Jobs and deletes the first run's.
        await kube_client.patch(
            kube.CRAWLJOBS,
            NAMESPACE,
            name,
            {"metadata": {"annotations": {resource.ANNOTATION_RERUN: "again"}}},
        )

        async def second_run_done() -> dict[str, Any] | None:
            got = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, name)
            status = got.get("status") or {}
            return got if status.get("run") == 2 and status.get("phase") in FINISHED else None

        rerun = await wait_until(second_run_done, 60, "the second run finished")

        async def first_run_gone() -> bool:
            return not expected & {
                job["metadata"]["name"] for job in await kube_client.list(kube.JOBS, NAMESPACE)
            }

        await wait_until(first_run_gone, 20, "the first run's Jobs deleted")
        second = await _shard_jobs(kube_client, name)

    status = done["status"]
    assert (status["phase"], status["reason"]) == ("Succeeded", "Completed"), status
    assert status["result"]["rowsRead"] == 21  # the finalizing shard's whole-object count
    assert status["attempts"] == 3
    assert status["jobName"] == jobs.shard_job_stem(name, 1)
    assert {job["metadata"]["name"] for job in made.values()} == expected
    for index, job in made.items():
        assert job["metadata"]["annotations"] == {
            resource.ANNOTATION_RUN: "1",
            resource.ANNOTATION_SHARDS: "3",
        }
        assert job["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
        assert job["spec"]["completions"] == 1 and job["spec"]["parallelism"] == 1
        assert job["spec"]["template"]["spec"]["containers"][0]["args"][-4:] == [
            "--shards", "3", "--shard-index", str(index),
        ]  # fmt: skip
    # At most --shard-parallelism shard Jobs unfinished at once, and that many did run together.
    assert _most_unfinished_at_once(events, expected) == 2, events
    # The sharded CrawlJob held the one slot (--max-active 1) until its last shard Job finished.
    assert queued["status"]["phase"] == "Queued", queued["status"]
    added_after = next(
        i for i, (kind, job, _) in enumerate(events) if kind == "ADDED" and job == after["metadata"]["name"]
    )
    finished_before = {job for kind, job, finished in events[:added_after] if finished and job in expected}
    assert finished_before == expected, events[: added_after + 1]
    # Each shard ran once per run.
    runs = Counter((tmp_path / "runs.log").read_text().split())
    assert runs == Counter({f"{name}#{index}": 2 for index in range(3)} | {after["metadata"]["name"]: 1}), (
        runs
    )
    assert rerun["status"]["phase"] == "Succeeded" and rerun["status"]["jobName"] == jobs.shard_job_stem(
        name, 2
    )
    assert {job["metadata"]["name"] for job in second.values()} == {
        jobs.shard_job_name(name, 2, index) for index in range(3)
    }


async def test_a_permanently_failing_shard_fails_the_crawljob_naming_it_and_stops_the_others(
    old_server: str, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = crawljob("shards/bad_badshard-1_sleep-30.csv", shards=3)
    name = body["metadata"]["name"]
    async with (
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}),
        running_operator(old_server, tmp_path / "op.log", **{"shard-parallelism": 3}),
    ):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        failed = await wait_phase(kube_client, name, FINISHED)

        async def others_gone() -> dict[int, dict[str, Any]] | None:
            left = await _shard_jobs(kube_client, name)
            pods = [
                pod
                for index in (0, 2)
                for pod in await kube_client.list(
                    kube.PODS, NAMESPACE, {"job-name": jobs.shard_job_name(name, 1, index)}
                )
            ]
            return left if set(left) == {1} and not pods else None

        left = await wait_until(others_gone, 20, "the running shards' Jobs and pods deleted")

    status = failed["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "BadInput"), status
    assert status["message"].startswith("shard 1 of 3: "), status["message"]
    assert status["message"].count("shard 1 of 3") == 1, status["message"]
    assert "not retried" in status["message"]
    assert _finished(left[1])  # the failed shard's Job stays, with its pod's log


async def test_a_shard_size_without_the_objects_size_runs_one_shard_and_says_so(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    # The minimal webhook carries no size: spec.shardSizeMb cannot be applied, and is not silently ignored.
    body = crawljob("shards/nosize_ok-3.csv", shardSizeMb=1)
    sized = crawljob("shards/sized_ok-3.csv", shardSizeMb=1)
    sized["spec"]["source"]["size"] = 100  # one shard by its size: nothing to say
    async with (
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}),
        running_operator(emulator[1], tmp_path / "op.log"),
    ):
        for item in (body, sized):
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, item)
        for item in (body, sized):
            await wait_phase(kube_client, item["metadata"]["name"], {"Succeeded"})
        warned = await wait_until(
            lambda: _reasons(kube_client, body["metadata"]["name"], "ShardSizeUnknown"), 10, "the Warning"
        )
        quiet = await _reasons(kube_client, sized["metadata"]["name"], "ShardSizeUnknown")

    [event] = warned
    assert event["type"] == "Warning"
    assert event["message"].startswith("spec.shardSizeMb is 1 but the object's size is unknown")
    assert "set spec.shards, or spec.source.size" in event["message"]
    assert not quiet


async def _reasons(client: kube.KubeClient, name: str, reason: str) -> list[dict[str, Any]]:
    return [event for event in await events_of(client, name) if event["reason"] == reason]


async def test_the_deadline_is_the_whole_runs_not_each_shards(
    old_server: str, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    # Three shards of ~2 s each, one at a time, under a 4 s deadline: each shard alone would make it,
    # the run cannot. The later shard Jobs get what is left of it; the run fails at its deadline.
    body = crawljob("shards/slow_sleep-2_ok-1.csv", shards=3, activeDeadlineSeconds=4)
    name = body["metadata"]["name"]
    async with (
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}),
        running_operator(old_server, tmp_path / "op.log", **{"shard-parallelism": 1}),
    ):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        failed = await wait_phase(kube_client, name, FINISHED)
        made = await _shard_jobs(kube_client, name)

    status = failed["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded"), status
    assert "activeDeadlineSeconds=4" in status["message"], status["message"]
    assert 2 not in made  # never started: the deadline had passed
    deadlines = [made[index]["spec"]["activeDeadlineSeconds"] for index in sorted(made)]
    assert deadlines[0] == 4 and all(left < 4 for left in deadlines[1:]), deadlines
    assert all(job["metadata"]["annotations"]["crawljob.io/deadline"] == "4" for job in made.values())


async def test_a_shard_due_after_the_runs_deadline_is_not_started_and_the_run_fails(
    old_server: str, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    # The run's first shard Job was made an hour ago (as an operator restarted after a long outage
    # finds it) and finished; the next shards are due, the 10-minute deadline has passed.
    body = await kube_client.create(
        kube.CRAWLJOBS, NAMESPACE, crawljob("shards/late_ok-1.csv", shards=3, activeDeadlineSeconds=600)
    )
    name = body["metadata"]["name"]
    settings = OperatorSettings(namespace=NAMESPACE, worker_command=(sys.executable, str(FAKE_WORKER)))
    first = jobs.build_shard_job(body, settings, 0, 3, deadline=600)
    first["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    await kube_client.create(kube.JOBS, NAMESPACE, first)
    done = {"type": "Complete", "status": "True", "lastTransitionTime": "2020-01-01T00:00:05Z"}
    await kube_client.patch(
        kube.JOBS, NAMESPACE, first["metadata"]["name"],
        {"status": {"succeeded": 1, "startTime": "2020-01-01T00:00:00Z", "conditions": [done]}}, "status",
    )  # fmt: skip
    async with running_operator(old_server, tmp_path / "op.log", **{"shard-parallelism": 1}):
        failed = await wait_phase(kube_client, name, FINISHED)
        made = await _shard_jobs(kube_client, name)

    status = failed["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded"), status
    assert status["message"] == (
        "the crawl ran longer than its deadline (activeDeadlineSeconds=600) and was stopped: "
        "2 of its 3 shards had not started"
    )
    assert set(made) == {0}


async def test_an_operator_restart_between_shard_jobs_adopts_the_made_ones_and_creates_the_rest(
    old_server: str, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = crawljob("shards/restart_sleep-0.3_ok-4.csv", shards=3)
    name = body["metadata"]["name"]
    owner = await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
    # What an operator killed after creating shard Jobs 0 and 1 (and before any status write) left.
    settings = OperatorSettings(worker_command=(sys.executable, str(FAKE_WORKER)))
    for index in (0, 1):
        await kube_client.create(kube.JOBS, NAMESPACE, jobs.build_shard_job(owner, settings, index, 3))
    creations: Counter[str] = Counter()
    watcher = asyncio.create_task(count_job_creations(kube_client, creations))
    async with (
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}),
        running_operator(old_server, tmp_path / "op.log", **{"shard-parallelism": 3}),
    ):
        done = await wait_phase(kube_client, name, FINISHED)
    watcher.cancel()

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["result"]["rowsRead"] == 12
    # Shard 2's Job was made by the operator; 0 and 1 were adopted: one Job object per shard.
    assert creations == Counter({jobs.shard_job_name(name, 1, index): 1 for index in range(3)}), creations
    runs = Counter((tmp_path / "runs.log").read_text().split())
    assert runs == Counter({f"{name}#{index}": 1 for index in range(3)}), runs


async def test_cancel_deletion_of_a_shard_job_and_of_the_crawljob_reach_every_shard_job(
    old_server: str, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    cancelled_body = crawljob("shards/cancel_sleep-30.csv", shards=3)
    broken_body = crawljob("shards/broken_sleep-30.csv", shards=3)
    deleted_body = crawljob("shards/deleted_sleep-30.csv", shards=2)
    cancelled, broken, deleted = (
        item["metadata"]["name"] for item in (cancelled_body, broken_body, deleted_body)
    )

    async def no_jobs_or_pods(name: str, keep: int = 0) -> bool:
        left = await _shard_jobs(kube_client, name)
        pods = await kube_client.list(kube.PODS, NAMESPACE, {resource.LABEL_CRAWLJOB: name})
        return len(left) == keep and not pods

    async with (
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}, max_parallel=8),
        running_operator(old_server, tmp_path / "op.log", **{"shard-parallelism": 3}),
    ):
        for item in (cancelled_body, broken_body, deleted_body):
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, item)
        for name in (cancelled, broken, deleted):
            await wait_phase(kube_client, name, {"Running"})

        await kube_client.patch(
            kube.CRAWLJOBS,
            NAMESPACE,
            cancelled,
            {"metadata": {"annotations": {resource.ANNOTATION_CANCEL: "true"}}},
        )
        cancel_done = await wait_phase(kube_client, cancelled, FINISHED)
        await wait_until(lambda: no_jobs_or_pods(cancelled), 20, "the cancelled run's Jobs and pods deleted")

        # Someone deletes shard 2's Job while the crawl runs.
        await kube_client.delete(kube.JOBS, NAMESPACE, jobs.shard_job_name(broken, 1, 2))
        broken_done = await wait_phase(kube_client, broken, FINISHED)
        await wait_until(lambda: no_jobs_or_pods(broken), 20, "the broken run's other Jobs deleted")

        await kube_client.delete(kube.CRAWLJOBS, NAMESPACE, deleted)
        await wait_until(lambda: no_jobs_or_pods(deleted), 20, "the deleted CrawlJob's Jobs deleted")

    status = cancel_done["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "Cancelled"), status
    assert f"the Jobs of its 3 shards ({jobs.shard_job_stem(cancelled, 1)}-s*)" in status["message"]
    status = broken_done["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "JobDeleted"), status
    assert status["message"].startswith(
        f"shard 2 of 3: the Job {jobs.shard_job_name(broken, 1, 2)} was deleted"
    )


async def test_admission_after_a_restart_adopts_shard_jobs_on_409_and_refuses_a_stranger(
    kube_client: kube.KubeClient,
) -> None:
    """The operator's admission (in process, against the emulator) for a CrawlJob whose first shard
    Jobs exist but are not in its view yet (a restart, the Job watch not caught up): the creates
    answer 409, the Jobs are ours and adopted, the rest made. A shard Job name held by a Job that
    is not the CrawlJob's fails it as InvalidSpec, naming the Job."""
    from crawljob.operator import admission
    from crawljob.operator.view import State

    settings = OperatorSettings(namespace=NAMESPACE, worker_command=(sys.executable, str(FAKE_WORKER)))
    state = State(settings=settings, client=kube_client, job_features=jobs.JobFeatures(indexed=False))
    owner = await kube_client.create(kube.CRAWLJOBS, NAMESPACE, crawljob("adopt/a.csv", shards=3))
    stranger = await kube_client.create(kube.CRAWLJOBS, NAMESPACE, crawljob("adopt/b.csv", shards=3))
    for index in (0, 1):
        await kube_client.create(kube.JOBS, NAMESPACE, jobs.build_shard_job(owner, settings, index, 3))
    # A Job named as b's shard 1 but owned by a: not b's.
    squatter = jobs.build_shard_job(owner, settings, 2, 3)
    squatter["metadata"]["name"] = jobs.shard_job_name(stranger["metadata"]["name"], 1, 1)
    await kube_client.create(kube.JOBS, NAMESPACE, squatter)

    for body in (owner, stranger):
        state.remember_crawljob(body)
        await admission.create_job(state, (NAMESPACE, body["metadata"]["name"]))
    await asyncio.gather(*state.tasks)

    made = await _shard_jobs(kube_client, owner["metadata"]["name"])
    assert {job["metadata"]["name"] for job in made.values()} == {
        jobs.shard_job_name(owner["metadata"]["name"], 1, index) for index in range(3)
    }
    assert all(
        job["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"] for job in made.values()
    )
    assert state.metrics.registry.get_sample_value("crawljob_jobs_adopted_total") == 2  # 0 and 1
    refused = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, stranger["metadata"]["name"])
    assert (refused["status"]["phase"], refused["status"]["reason"]) == ("Failed", "InvalidSpec")
    assert (
        f"a Job named {squatter['metadata']['name']} exists and is not owned" in refused["status"]["message"]
    )
    # b's shard 0, made before the conflict, does not run on: its run ended.
    assert not await _shard_jobs(kube_client, stranger["metadata"]["name"])


async def test_while_the_operator_is_down_a_deleted_crawljob_and_deleted_shard_jobs_are_seen_on_restart(
    old_server: str, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    orphan_body = crawljob("shards/orphan_sleep-60.csv", shards=3)
    robbed_body = crawljob("shards/robbed_sleep-60.csv", shards=3)
    orphan, robbed = orphan_body["metadata"]["name"], robbed_body["metadata"]["name"]
    operator = OperatorProcess(old_server, tmp_path / "op.log", **{"shard-parallelism": 3})
    async with running_runner(kube_client, max_parallel=8), operator:
        await operator.start()
        for body in (orphan_body, robbed_body):
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        for name in (orphan, robbed):
            await wait_phase(kube_client, name, {"Running"})
            await wait_until(lambda name=name: _count(kube_client, name, 3), 20, f"{name}: three shard Jobs")
        await operator.kill()
        await kube_client.delete(kube.CRAWLJOBS, NAMESPACE, orphan)  # the emulator has no garbage collector
        for index in range(3):
            await kube_client.delete(kube.JOBS, NAMESPACE, jobs.shard_job_name(robbed, 1, index))
        assert len(await _shard_jobs(kube_client, orphan)) == 3
        await operator.start()

        async def orphans_gone() -> bool:
            pods = await kube_client.list(kube.PODS, NAMESPACE, {resource.LABEL_CRAWLJOB: orphan})
            return not await _shard_jobs(kube_client, orphan) and not pods

        await wait_until(orphans_gone, 30, "the orphaned shard Jobs and their pods deleted")
        failed = await wait_phase(kube_client, robbed, FINISHED)
        await operator.stop()

    status = failed["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "JobDeleted"), status
    assert status["message"].startswith(
        f"the Jobs of its 3 shards ({jobs.shard_job_stem(robbed, 1)}-s*) were deleted"
    )


async def test_a_reported_shards_job_deleted_while_the_operator_is_down_is_not_made_again(
    old_server: str, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    # Shard 2's Job (the highest made) is deleted while the operator is down. Nothing in the view
    # says it was made, but its worker's progress entry (this run's id) does: JobDeleted, not a rerun.
    body = crawljob("shards/gap_sleep-60.csv", shards=3)
    name = body["metadata"]["name"]
    operator = OperatorProcess(old_server, tmp_path / "op.log", **{"shard-parallelism": 3})
    async with running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}, max_parallel=8), operator:
        await operator.start()
        created = await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        await wait_phase(kube_client, name, {"Running"})
        await wait_until(lambda: _count(kube_client, name, 3), 20, "three shard Jobs")
        await operator.kill()
        run_id = f"{created['metadata']['uid']}-1"
        entry = {"runId": run_id, "bytesRead": 10, "rowsRead": 1, "updateTime": "2026-01-01T00:00:00Z"}
        # As the worker of shard 2 reports (crawljob_worker/shardprogress.py); an earlier run's entry
        # for shard 1 does not count.
        stale = {**entry, "runId": f"{created['metadata']['uid']}-0"}
        await kube_client.patch(
            kube.CRAWLJOBS,
            NAMESPACE,
            name,
            {"status": {"progress": {"shards": {"2": entry, "1": stale}}}},
            "status",
        )
        await kube_client.delete(kube.JOBS, NAMESPACE, jobs.shard_job_name(name, 1, 2))
        await operator.start()
        failed = await wait_phase(kube_client, name, FINISHED)
        await operator.stop()
        made = await _shard_jobs(kube_client, name)

    status = failed["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "JobDeleted"), status
    assert status["message"].startswith("shard 2 of 3: "), status["message"]
    assert 2 not in made


async def _count(client: kube.KubeClient, name: str, count: int) -> bool:
    return len(await _shard_jobs(client, name)) == count
