"""Active/standby with kopf peering: only the active replica acts; the standby takes over on a crash.

Two operator processes share one KopfPeering object with distinct priorities. Every API request is
attributed to its replica by the User-Agent the operator sends (`crawljob-operator (<identity>)`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
import aiohttp.web
import pytest

from crawljob import kube
from crawljob.local.s3 import free_port
from fakes.recording import Call, recording_emulator
from fakes.stack import (
    NAMESPACE,
    OperatorProcess,
    count_job_creations,
    crawljob,
    running_runner,
    wait_phase,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

PEERING = "crawljob-operator"
LIFETIME = 3  # seconds: kopf's keep-alive then runs every second; a crash is noticed within ~3 s


def replica(
    url: str, log_path: Path, identity: str, priority: int, lifetime: int = LIFETIME
) -> OperatorProcess:
    flags = {
        "max-active": 3,
        "peering": PEERING,
        "priority": priority,
        "peering-identity": identity,
        "peering-lifetime": lifetime,
        "health-port": free_port(),
    }
    return OperatorProcess(url, log_path, **flags)


async def health(operator: OperatorProcess) -> tuple[int, dict[str, object], bool]:
    """(/healthz status, its body, the crawljob_replica_active gauge) of one replica."""
    base = f"http://127.0.0.1:{operator.flags['health-port']}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as answer:
            status, body = answer.status, await answer.json()
        async with http.get(f"{base}/metrics") as answer:
            active = "crawljob_replica_active 1.0" in await answer.text()
    return status, body, active


async def peers(client: kube.KubeClient) -> dict[str, object]:
    try:
        body = await client.get(kube.PEERINGS, NAMESPACE, PEERING)
    except kube.NotFound:
        return {}
    return dict(body.get("status") or {})


async def test_standby_stays_idle_while_the_active_lives_and_takes_over_after_a_crash(
    tmp_path: Path,
) -> None:
    bodies = [crawljob(f"ha/h{index:02d}_sleep-0.5_ok-{index + 1}.csv") for index in range(12)]
    names = [body["metadata"]["name"] for body in bodies]
    job_additions: Counter[str] = Counter()
    async with (
        recording_emulator() as (emulator, url),
        kube.KubeClient(kube.Connection(server=url)) as client,
    ):

        async def succeeded_at_least(count: int) -> bool:
            items = await client.list(kube.CRAWLJOBS, NAMESPACE)
            return sum((item.get("status") or {}).get("phase") == "Succeeded" for item in items) >= count

        active = replica(url, tmp_path / "high.log", "op-high", priority=10)
        spare = replica(url, tmp_path / "low.log", "op-low", priority=5)
        watcher = asyncio.create_task(count_job_creations(client, job_additions))
        async with running_runner(client, {"FAKE_WORKER_STATE": str(tmp_path)}, max_parallel=6):
            # No KopfPeering object exists yet: the first replica creates it.
            await active.start()
            await wait_until(lambda: _has_peer(client, "op-high"), 20, "op-high's keep-alive")
            await spare.start()
            await wait_until(lambda: _has_peer(client, "op-low"), 20, "op-low's keep-alive")
            for body in bodies:
                await client.create(kube.CRAWLJOBS, NAMESPACE, body)
            await wait_until(lambda: succeeded_at_least(4), 40, "4 CrawlJobs Succeeded")

            # While the high-priority replica lives, the low one has written nothing, and read only
            # the peering object; both are healthy, in their roles.
            assert spare.process is not None and spare.process.returncode is None, "the standby died"
            assert emulator.writes_by("op-low") == []
            assert all(call.is_peering for call in emulator.calls_by("op-low")), emulator.calls_by("op-low")
            assert any("/jobs" in call.path for call in emulator.writes_by("op-high"))
            high_health, low_health = await health(active), await health(spare)
            assert high_health[0] == 200 and high_health[1]["role"] == "active" and high_health[2]
            assert low_health[0] == 200 and low_health[1]["role"] == "standby" and not low_health[2]
            assert "higher priority: op-high (10)" in str(low_health[1]["reason"])

            await active.kill()
            killed_at = time.monotonic()
            finished = [await wait_phase(client, name, {"Succeeded", "Failed"}, timeout=40) for name in names]
            taken_over = emulator.writes_by("op-low", since=killed_at)
            low_health = await health(spare)
            assert low_health[0] == 200 and low_health[1]["role"] == "active" and low_health[2]
            await spare.stop()
        watcher.cancel()

    runs = Counter((tmp_path / "runs.log").read_text().split())
    assert [item["status"]["phase"] for item in finished] == ["Succeeded"] * 12
    assert [item["status"]["result"]["rowsRead"] for item in finished] == list(range(1, 13))
    assert sorted(job_additions) == sorted(names)
    assert set(job_additions.values()) == {1}, job_additions  # 0 duplicate Jobs
    assert runs == Counter({name: 1 for name in names}), runs  # each crawl ran exactly once
    # The standby did the rest: it created Jobs after the crash (so the attribution can see it act).
    standby_jobs = [call for call in taken_over if call.method == "POST" and call.path.endswith("/jobs")]
    assert standby_jobs, "the standby created no Job after the active replica was killed"
    failover = taken_over[0].at - killed_at
    assert failover < LIFETIME + 3, failover
    print(
        f"standby test: failover {failover:.1f} s after SIGKILL (peering lifetime {LIFETIME} s); "
        f"Jobs created by the active {len(names) - len(standby_jobs)}, by the standby "
        f"{len(standby_jobs)}; 12/12 Succeeded, 0 duplicates"
    )


async def _has_peer(client: kube.KubeClient, identity: str) -> bool:
    return identity in await peers(client)


async def test_a_gracefully_stopped_active_replica_hands_over_at_once(tmp_path: Path) -> None:
    """kopf removes its keep-alive first thing on exit: the active replica stops acting and the
    standby starts at once, without waiting for the (here long) lifetime to expire."""
    lifetime = 30
    bodies = [crawljob(f"ha/g{index:02d}_sleep-1_ok-{index + 1}.csv") for index in range(6)]
    names = [body["metadata"]["name"] for body in bodies]
    job_additions: Counter[str] = Counter()
    async with (
        recording_emulator() as (emulator, url),
        kube.KubeClient(kube.Connection(server=url)) as client,
    ):

        async def some_running() -> bool:
            items = await client.list(kube.CRAWLJOBS, NAMESPACE)
            return any((item.get("status") or {}).get("phase") == "Running" for item in items)

        active = replica(url, tmp_path / "high.log", "op-high", priority=1, lifetime=lifetime)
        spare = replica(url, tmp_path / "low.log", "op-low", priority=0, lifetime=lifetime)
        watcher = asyncio.create_task(count_job_creations(client, job_additions))
        async with running_runner(client, {"FAKE_WORKER_STATE": str(tmp_path)}, max_parallel=6):
            await active.start()
            await wait_until(lambda: _has_peer(client, "op-high"), 20, "op-high's keep-alive")
            await spare.start()
            await wait_until(lambda: _role_is(spare, "standby"), 20, "op-low standing by")
            for body in bodies:
                await client.create(kube.CRAWLJOBS, NAMESPACE, body)
            await wait_until(some_running, 20, "a CrawlJob Running")
            stopping_at = time.monotonic()
            await active.stop()  # SIGTERM
            assert "op-high" not in await peers(client)
            await wait_until(lambda: _role_is(spare, "active"), 10, "op-low active")
            finished = [await wait_phase(client, name, {"Succeeded", "Failed"}, timeout=30) for name in names]
            await spare.stop()
        watcher.cancel()
    low_writes = emulator.writes_by("op-low")
    high_writes = emulator.writes_by("op-high")
    assert [item["status"]["phase"] for item in finished] == ["Succeeded"] * 6
    assert set(job_additions.values()) == {1} and sorted(job_additions) == sorted(names)
    assert Counter((tmp_path / "runs.log").read_text().split()) == Counter({name: 1 for name in names})
    assert low_writes and high_writes
    handover = low_writes[0].at - stopping_at
    # Within a gate check (5 s at this lifetime); taking over by expiry would take 20 s or more
    # here (the lifetime 30 s minus the few seconds since op-high's last keep-alive).
    assert handover < 10, handover
    overlap = high_writes[-1].at - low_writes[0].at
    print(
        f"graceful handover: the standby's first write {handover:.2f} s after SIGTERM "
        f"(lifetime {lifetime} s); last write of the stopping replica {overlap:+.3f} s after it"
    )


async def _role_is(operator: OperatorProcess, role: str) -> bool:
    try:
        status, body, _ = await health(operator)
    except aiohttp.ClientError:
        return False
    return status == 200 and body.get("role") == role


async def test_a_returning_higher_priority_replica_takes_over_without_duplicates(tmp_path: Path) -> None:
    """Failback (a StatefulSet rollout brings pod 0 back while pod 1 acts), then back again: the
    displaced replica stops creating Jobs before the returning one starts, and no status ever
    goes back from a finished phase (a replica that stood by must not act on what it saw before)."""
    lifetime = 6  # gate checks every second: the returning replica waits that long before acting
    bodies = [crawljob(f"ha/b{index:02d}_sleep-3_ok-{index + 1}.csv") for index in range(9)]
    last = crawljob("ha/b-last_ok-10.csv")
    names = [body["metadata"]["name"] for body in bodies]
    job_additions: Counter[str] = Counter()
    phases: dict[str, list[str]] = {}
    async with (
        recording_emulator() as (emulator, url),
        kube.KubeClient(kube.Connection(server=url)) as client,
    ):

        async def watch_phases() -> None:
            async for event in client.watch(kube.CRAWLJOBS, NAMESPACE):
                phase = (event["object"].get("status") or {}).get("phase")
                history = phases.setdefault(event["object"]["metadata"]["name"], [])
                if phase and (not history or history[-1] != phase):
                    history.append(phase)

        async def some_running() -> bool:
            items = await client.list(kube.CRAWLJOBS, NAMESPACE)
            return any((item.get("status") or {}).get("phase") == "Running" for item in items)

        low = replica(url, tmp_path / "low.log", "op-low", priority=0, lifetime=lifetime)
        high = replica(url, tmp_path / "high.log", "op-high", priority=1, lifetime=lifetime)
        watchers = [
            asyncio.create_task(count_job_creations(client, job_additions)),
            asyncio.create_task(watch_phases()),
        ]
        async with running_runner(client, {"FAKE_WORKER_STATE": str(tmp_path)}, max_parallel=6):
            await low.start()
            for body in bodies:
                await client.create(kube.CRAWLJOBS, NAMESPACE, body)
            await wait_until(some_running, 20, "a CrawlJob Running")
            await high.start()
            await wait_until(lambda: _role_is(high, "active"), 20, "op-high active")
            assert await _role_is(low, "standby")
            finished = [await wait_phase(client, name, {"Succeeded", "Failed"}, timeout=40) for name in names]
            high_stopping_at = time.monotonic()
            await high.stop()  # and back to op-low, which saw these CrawlJobs running before
            await wait_until(lambda: _role_is(low, "active"), 10, "op-low active again")
            await client.create(kube.CRAWLJOBS, NAMESPACE, last)
            await wait_phase(client, last["metadata"]["name"], {"Succeeded", "Failed"}, timeout=20)
            await low.stop()
            final = {item["metadata"]["name"]: item for item in await client.list(kube.CRAWLJOBS, NAMESPACE)}
            events = await client.list(kube.EVENTS, NAMESPACE)
        for watcher in watchers:
            watcher.cancel()

    def job_creations(identity: str) -> list[Call]:
        return [
            call for call in emulator.writes_by(identity) if call.method == "POST" and "/jobs" in call.path
        ]

    low_jobs = [call for call in job_creations("op-low") if call.at < high_stopping_at]
    high_jobs = job_creations("op-high")
    assert [item["status"]["phase"] for item in finished] == ["Succeeded"] * 9
    assert set(job_additions.values()) == {1} and sorted(job_additions) == sorted(
        [*names, last["metadata"]["name"]]
    )
    assert Counter((tmp_path / "runs.log").read_text().split()) == Counter(
        {name: 1 for name in job_additions}
    )
    assert low_jobs and high_jobs, (len(low_jobs), len(high_jobs))
    assert low_jobs[-1].at < high_jobs[0].at  # the loops never overlapped
    regressed = {name: history for name, history in phases.items() if history[-1] != "Succeeded"
                 or any(phase != "Succeeded" for phase in history[history.index("Succeeded"):])}  # fmt: skip
    assert not regressed, regressed
    # Nothing rewrote a finished status, and each finish was announced once.
    for item in finished:
        name = item["metadata"]["name"]
        for field in ("reason", "message", "completionTime", "conditions", "result"):
            assert final[name]["status"][field] == item["status"][field], (name, field)
    completed = Counter(
        event["involvedObject"]["name"] for event in events if event.get("reason") == "Completed"
    )
    assert completed == Counter({name: 1 for name in job_additions}), completed
    print(
        f"failback: op-low created {len(low_jobs)} Jobs, op-high {len(high_jobs)}; op-low's last Job "
        f"{high_jobs[0].at - low_jobs[-1].at:.2f} s before op-high's first"
    )
