"""Restart safety: SIGKILL the operator process at several points; nothing is lost or done twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from crawljob import kube
from crawljob.local.emulator import Emulator
from fakes.stack import (
    NAMESPACE,
    OperatorProcess,
    count_job_creations,
    crawljob,
    running_runner,
    wait_phase,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)


async def test_operator_killed_at_several_points_creates_no_duplicate_and_finishes_all(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    bodies = [crawljob(f"restart/r{index:02d}_sleep-0.4_ok-{index + 1}.csv") for index in range(20)]
    names = [body["metadata"]["name"] for body in bodies]
    job_additions: Counter[str] = Counter()

    async def jobs_count_at_least(count: int) -> bool:
        return len(await kube_client.list(kube.JOBS, NAMESPACE)) >= count

    async def succeeded_at_least(count: int) -> bool:
        items = await kube_client.list(kube.CRAWLJOBS, NAMESPACE)
        return sum((item.get("status") or {}).get("phase") == "Succeeded" for item in items) >= count

    kills = []
    operator = OperatorProcess(emulator[1], tmp_path / "op.log", **{"max-active": 6})
    watcher = asyncio.create_task(count_job_creations(kube_client, job_additions))
    async with running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}, max_parallel=6), operator:
        await operator.start()
        for body in bodies:
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        # Kill points: while the first Jobs are being created, mid-run, and late in the run.
        for point in (
            lambda: jobs_count_at_least(1),
            lambda: succeeded_at_least(6),
            lambda: succeeded_at_least(14),
        ):
            await wait_until(point, 60, "kill point")
            await operator.kill()
            kills.append(len(await kube_client.list(kube.JOBS, NAMESPACE)))
            await operator.start()
        finished = [
            await wait_phase(kube_client, name, {"Succeeded", "Failed"}, timeout=90) for name in names
        ]
        await operator.stop()
    watcher.cancel()
    runs = Counter((tmp_path / "runs.log").read_text().split())
    assert [item["status"]["phase"] for item in finished] == ["Succeeded"] * 20
    assert [item["status"]["result"]["rowsRead"] for item in finished] == list(range(1, 21))
    assert sorted(job_additions) == sorted(names)
    assert set(job_additions.values()) == {1}, job_additions  # 0 duplicate Jobs
    assert runs == Counter({name: 1 for name in names}), runs  # each crawl ran exactly once
    print(
        f"restart test: 3 SIGKILLs (Jobs existing at each kill: {kills}), 20/20 Succeeded, "
        f"{sum(job_additions.values())} Jobs created, {sum(runs.values())} worker runs"
    )


async def test_crawljob_deleted_while_the_operator_is_down_has_its_job_cancelled_on_restart(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = crawljob("down/sleep-60.csv")
    name = body["metadata"]["name"]
    operator = OperatorProcess(emulator[1], tmp_path / "op.log")
    async with running_runner(kube_client), operator:
        await operator.start()
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        await wait_phase(kube_client, name, {"Running"})
        await operator.kill()
        await kube_client.delete(kube.CRAWLJOBS, NAMESPACE, name)  # no finalizer: not blocked
        assert await kube_client.list(kube.JOBS, NAMESPACE)  # the emulator has no garbage collector
        await operator.start()

        async def cancelled() -> bool:
            jobs = await kube_client.list(kube.JOBS, NAMESPACE)
            pods = await kube_client.list(kube.PODS, NAMESPACE, {"job-name": name})
            return not jobs and not pods

        await wait_until(cancelled, 30, "orphaned Job and Pods deleted")
        await operator.stop()


async def test_two_operators_running_by_mistake_still_make_one_job_per_crawljob(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    """The chart runs one replica (Recreate); should two ever overlap, names + adopt-on-409 hold."""
    bodies = [crawljob(f"twice/t{index:02d}_sleep-0.2_ok-{index + 1}.csv") for index in range(10)]
    names = [body["metadata"]["name"] for body in bodies]
    job_additions: Counter[str] = Counter()

    first = OperatorProcess(emulator[1], tmp_path / "op1.log")
    second = OperatorProcess(emulator[1], tmp_path / "op2.log")
    watcher = asyncio.create_task(count_job_creations(kube_client, job_additions))
    async with (
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}, max_parallel=8),
        first,
        second,
    ):
        await first.start()
        await second.start()
        for body in bodies:
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        finished = [
            await wait_phase(kube_client, name, {"Succeeded", "Failed"}, timeout=60) for name in names
        ]
        await first.stop()
        await second.stop()
    watcher.cancel()
    assert [item["status"]["result"]["rowsRead"] for item in finished] == list(range(1, 11))
    assert set(job_additions.values()) == {1} and sorted(job_additions) == sorted(names)
    assert Counter((tmp_path / "runs.log").read_text().split()) == Counter({name: 1 for name in names})
