"""Operator throughput: N CrawlJobs created at once against the emulator, the runner in instant mode.

Measures the time until every CrawlJob has its Job and until every one is Succeeded, for one or more
concurrency caps, and prints a table. Usage: python bench/operator.py [--count 1000] [--caps 8,1000] (the state is polled every second)
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

from crawljob import kube, resource
from crawljob.local.emulator import serve_emulator
from crawljob.local.runner import JobRunner

NAMESPACE = "default"


async def one_round(count: int, cap: int, log_dir: Path) -> dict[str, float]:
    async with (
        serve_emulator() as (_, url),
        kube.KubeClient(kube.Connection(server=url), timeout=60) as client,
    ):
        runner = JobRunner(client, NAMESPACE, {}, mode="instant", max_parallel=64)
        runner_task = asyncio.create_task(runner.run())
        log = (log_dir / f"operator-cap{cap}.log").open("wb")
        operator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "crawljob.cli",
            "operator",
            "--kube-server",
            url,
            "--namespace",
            NAMESPACE,
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
            env={**os.environ, "KUBECONFIG": ""},
        )
        try:
            deadline = time.monotonic() + 60
            while "operator started" not in (log_dir / f"operator-cap{cap}.log").read_text():
                if operator.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the operator did not start; see {log_dir}/operator-cap{cap}.log")
                await asyncio.sleep(0.1)
            bodies = [
                resource.crawljob_manifest(resource.ObjectRef("bench", f"in/file-{index:05d}.csv"), NAMESPACE)
                for index in range(count)
            ]
            slots = asyncio.Semaphore(32)

            async def create(body: dict[str, object]) -> None:
                async with slots:
                    await client.create(kube.CRAWLJOBS, NAMESPACE, body)

            started = time.perf_counter()
            await asyncio.gather(*(create(body) for body in bodies))
            created = time.perf_counter() - started
            jobs_done: float | None = None
            while True:
                if jobs_done is None and len(await client.list(kube.JOBS, NAMESPACE)) >= count:
                    jobs_done = time.perf_counter() - started
                items = await client.list(kube.CRAWLJOBS, NAMESPACE)
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
            runner_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner_task
    return {"created": created, "jobs": jobs_done or finished, "succeeded": finished}


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument(
        "--caps", default="8,1000", help="comma list of concurrency caps (8 = the default cap)"
    )
    parser.add_argument("--log-dir", type=Path, help="keep the operator logs here")
    args = parser.parse_args(argv)
    caps = [int(item) for item in args.caps.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="crawljob-bench-") as scratch:
        log_dir = args.log_dir or Path(scratch)
        log_dir.mkdir(parents=True, exist_ok=True)
        for cap in caps:
            rows.append((cap, await one_round(args.count, cap, log_dir)))
    print(f"\noperator benchmark: {args.count} CrawlJobs created at once, emulator + runner in instant mode")
    print(
        f"{'cap':>6} {'create s':>9} {'all Jobs s':>11} {'all Succeeded s':>16} {'CrawlJobs/s':>12} {'goal <60 s':>10}"
    )
    for cap, row in rows:
        rate = args.count / row["succeeded"]
        verdict = "ok" if row["succeeded"] < 60 else "MISSED"
        print(
            f"{cap:>6} {row['created']:>9.1f} {row['jobs']:>11.1f} {row['succeeded']:>16.1f} {rate:>12.1f} {verdict:>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
