"""Operator throughput: N CrawlJobs created at once, Pods completed at once (instant mode).

Targets: the emulator (with the local runner: the emulator's Job controller + the local kubelet),
and, when `make test-cluster` has built it, the real control plane (etcd on tmpfs, kube-apiserver
and the real Job controller 1.20; the local kubelet `--runtime instant` completes the Pods). On
the real server the run counts every write the API server answered (its own metrics: operator,
Job controller, kubelet and the creates), then a raw create loop pushes the same number of writes
(CrawlJob creates, 32 at a time, in a fresh namespace) through the same server: the server's own
write capacity, the physical limit of any operator on it.

Measures the time until every CrawlJob has its Job and until every one is Succeeded, for one or more
concurrency caps, and prints a table. Usage: python bench/operator.py [--count 1000] [--caps 8,1000]
[--targets emulator,real] (the state is polled every second)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import realcluster  # bench/realcluster.py (the script's directory is on sys.path)
from realcluster import RealCluster

from crawljob import kube, resource
from crawljob.local.emulator import serve_emulator
from crawljob.local.runner import JobRunner
from crawljob.models import Body

NAMESPACE = "default"


def manifests(count: int, namespace: str, prefix: str = "in") -> list[Body]:
    return [
        resource.crawljob_manifest(resource.ObjectRef("bench", f"{prefix}/file-{index:05d}.csv"), namespace)
        for index in range(count)
    ]


async def create_all(client: kube.KubeClient, bodies: list[Body], namespace: str) -> None:
    slots = asyncio.Semaphore(32)

    async def create(body: Body) -> None:
        async with slots:
            await client.create(kube.CRAWLJOBS, namespace, body)

    await asyncio.gather(*(create(body) for body in bodies))


async def emulator_round(count: int, cap: int, log_dir: Path) -> dict[str, float]:
    async with (
        serve_emulator() as (_, url),
        kube.KubeClient(kube.Connection(server=url), timeout=60) as client,
    ):
        runner = JobRunner(client, NAMESPACE, {}, mode="instant", max_parallel=64)
        runner_task = asyncio.create_task(runner.run())
        try:
            return await measure(client, count, cap, log_dir / f"operator-emulator-cap{cap}.log", NAMESPACE,
                                 ["--kube-server", url], {"KUBECONFIG": ""})  # fmt: skip
        finally:
            runner_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner_task


async def real_round(cluster: RealCluster, count: int, cap: int, log_dir: Path) -> dict[str, float]:
    namespace = await cluster.namespace()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    kubelet_log = (log_dir / f"kubelet-real-cap{cap}.log").open("wb")
    kubelet = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawljob.local.kubelet", "--namespace", namespace, "--runtime", "instant",
        "--workdir", str(log_dir / "pods"), stdout=kubelet_log, stderr=kubelet_log, env=env,
    )  # fmt: skip
    writes_before = cluster.write_count()
    try:
        async with kube.KubeClient(cluster.connection(), timeout=60) as client:
            row = await measure(client, count, cap, log_dir / f"operator-real-cap{cap}.log", namespace, [],
                                {"KUBECONFIG": str(cluster.kubeconfig)})  # fmt: skip
    finally:
        kubelet.terminate()
        await kubelet.wait()
        kubelet_log.close()
    writes = cluster.write_count() - writes_before
    raw_namespace = await cluster.namespace()
    async with kube.KubeClient(cluster.connection(), timeout=60) as client:
        started = time.perf_counter()
        await create_all(client, manifests(writes, raw_namespace, "raw"), raw_namespace)
        raw = time.perf_counter() - started
    return {**row, "writes": float(writes), "raw": raw}


async def measure(
    client: kube.KubeClient,
    count: int,
    cap: int,
    log_path: Path,
    namespace: str,
    connection_flags: list[str],
    env: dict[str, str],
) -> dict[str, float]:
    """Start the operator, create *count* CrawlJobs, time until all have Jobs and all Succeeded."""
    log = log_path.open("wb")
    operator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crawljob.cli",
        "operator",
        *connection_flags,
        "--namespace",
        namespace,
        "--max-active",
        str(cap),
        "--health-port",
        "0",
        "--log-format",
        "text",
        "--resync-seconds",
        "30",
        stdout=log,
        stderr=log,
        env={**os.environ, **env},
    )
    try:
        deadline = time.monotonic() + 60
        while "operator started" not in await asyncio.to_thread(log_path.read_text):
            if operator.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start; see {log_path}")
            await asyncio.sleep(0.1)
        started = time.perf_counter()
        await create_all(client, manifests(count, namespace), namespace)
        created = time.perf_counter() - started
        jobs_done: float | None = None
        while True:
            if jobs_done is None and len(await client.list(kube.JOBS, namespace)) >= count:
                jobs_done = time.perf_counter() - started
            items = await client.list(kube.CRAWLJOBS, namespace)
            succeeded = sum((item.get("status") or {}).get("phase") == "Succeeded" for item in items)
            if succeeded >= count:
                if jobs_done is None:
                    jobs_done = time.perf_counter() - started
                break
            if time.perf_counter() - started > 600:
                raise TimeoutError(f"only {succeeded}/{count} Succeeded after 600 s")
            await asyncio.sleep(1.0)  # polling shares the emulator's event loop: keep it light
        finished = time.perf_counter() - started
    finally:
        operator.terminate()
        await operator.wait()
        log.close()
    return {"created": created, "jobs": jobs_done or finished, "succeeded": finished}


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument(
        "--caps", default="8,1000", help="comma list of concurrency caps (8 = the default cap)"
    )
    parser.add_argument("--log-dir", type=Path, help="keep the operator logs here")
    parser.add_argument(
        "--real-caps",
        default="1000",
        help="caps for the real API server (default 1000: at cap 8 the 1.20 Job controller's per-Job "
        "latency, not the operator or the server's write capacity, sets the pace)",
    )
    parser.add_argument(
        "--targets",
        default="emulator,real" if realcluster.built() else "emulator",
        help="comma list of emulator, real (default: real too when the control plane is built)",
    )
    args = parser.parse_args(argv)
    caps = [int(item) for item in args.caps.split(",")]
    targets = args.targets.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="crawljob-bench-") as scratch:
        log_dir = args.log_dir or Path(scratch)
        log_dir.mkdir(parents=True, exist_ok=True)
        if "emulator" in targets:
            for cap in caps:
                rows.append(("emulator", cap, await emulator_round(args.count, cap, log_dir)))
                print(f"  emulator, cap {cap}: {rows[-1][2]}", file=sys.stderr)
        if "real" in targets:
            with realcluster.running() as cluster:  # started once; a fresh namespace per round
                for cap in [int(item) for item in args.real_caps.split(",")]:
                    try:
                        rows.append(
                            ("real API server", cap, await real_round(cluster, args.count, cap, log_dir))
                        )
                    except TimeoutError as error:  # keep the other rounds' rows
                        print(f"  real API server, cap {cap}: {error}", file=sys.stderr)
                        continue
                    print(f"  real API server, cap {cap}: {rows[-1][2]}", file=sys.stderr)
    print(
        f"\noperator benchmark: {args.count} CrawlJobs created at once, Pods completed at once (instant mode)"
    )
    header = (
        f"{'target':<16} {'cap':>5} {'create s':>9} {'all Jobs s':>11} {'all Succeeded s':>16} "
        f"{'CrawlJobs/s':>12} {'goal <60 s':>10} {'writes':>7} {'raw loop s':>10} {'vs raw':>7}"
    )
    print(header)
    for target, cap, row in rows:
        rate = args.count / row["succeeded"]
        verdict = "ok" if row["succeeded"] < 60 else "MISSED"
        raw = (
            f"{row['writes']:>7.0f} {row['raw']:>10.1f} {row['succeeded'] / row['raw']:>6.2f}x"
            if "raw" in row
            else f"{'':>7} {'':>10} {'':>7}"
        )
        print(
            f"{target:<16} {cap:>5} {row['created']:>9.1f} {row['jobs']:>11.1f} {row['succeeded']:>16.1f} "
            f"{rate:>12.1f} {verdict:>10} {raw}"
        )
    if any("raw" in row for _, _, row in rows):
        print(
            "raw loop: the same number of writes as the API server answered during the round, as "
            "CrawlJob creates 32 at a time (goal: the operator within 2x of it)"
        )
    print(f"(load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
