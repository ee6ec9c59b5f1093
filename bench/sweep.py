"""CrawlSource sweeps: a backfill pass over N objects in moto's S3, then steady-state passes with 100 new.

The sweeper (`crawljob.operator.sweeper.Sweeper`, the operator's own code) runs in this process against
the Kubernetes API emulator and moto's S3 server, both on loopback. Its view of CrawlJobs is filled
from the API before each pass, as the operator's watch fills it. Contender, measured in the same run:
the same sweep without that view ("stateless": every listed object is POSTed and a 409 means it exists),
which is what a sweeper keeping no state would cost.

Usage: python bench/sweep.py [--objects 100000] [--new 100]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import psutil

from crawljob import kube, resource, sources
from crawljob.local.s3 import run_local_s3
from crawljob.operator import sweeper as sweeper_module
from crawljob.operator.s3list import S3Lister
from crawljob.operator.settings import OperatorSettings
from crawljob.operator.view import State

NAMESPACE = "default"
BUCKET = "bench-landing"
PREFIX = "feed/"


EMULATOR = """
import asyncio, sys
from crawljob.local.emulator import serve_emulator
async def main():
    async with serve_emulator() as (_, url):
        print(url, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


@contextmanager
def emulator_process() -> Iterator[str]:
    """The API emulator in a child process, so that this process's RSS is the sweeper's alone."""
    process = subprocess.Popen([sys.executable, "-c", EMULATOR], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(10)


def rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


class CountingClient(kube.KubeClient):
    """The operator's API client, counting requests by method (the sweep's Kubernetes API cost)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    async def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> kube.Body:
        self.calls[method] += 1
        return await super().request(method, path, *args, **kwargs)


def put_objects(client: Any, keys: list[str]) -> None:
    """Upload tiny objects with a few threads (moto's server handles one request per thread)."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=b"a\n1\n"), keys))


async def refill_view(state: State, client: kube.KubeClient) -> None:
    """What the operator's watch keeps: every CrawlJob of the namespace (not counted as sweep cost)."""
    state.crawljobs.clear()
    for item in await client.list(kube.CRAWLJOBS, NAMESPACE):
        state.remember_crawljob(item)


async def one_pass(state: State, client: CountingClient, lister: S3Lister, with_view: bool) -> dict[str, Any]:
    state.sources.clear()
    for item in await client.list(kube.CRAWLSOURCES, NAMESPACE):
        state.sources[(NAMESPACE, item["metadata"]["name"])] = item
    if with_view:
        await refill_view(state, client)
    else:
        state.crawljobs.clear()
    # Mark the source as due now (a sweep request), as the annotation would.
    token = f"bench-{time.monotonic_ns()}"
    body = state.sources[(NAMESPACE, "bench")]
    body.setdefault("metadata", {}).setdefault("annotations", {})[sources.ANNOTATION_SWEEP] = token
    client.calls.clear()
    lister.calls = 0
    sweeper = sweeper_module.Sweeper(state, lister)
    peak = rss_mib()
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_mib())
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    result = await sweeper.sweep_source((NAMESPACE, "bench"))
    elapsed = time.perf_counter() - started
    sampling = False
    await sampler
    assert result is not None and result.error_code is None, result
    return {
        "seconds": elapsed,
        "listed": result.listed,
        "created": len(result.created),
        "s3_calls": lister.calls,
        "k8s_writes": client.calls["POST"] + client.calls["PATCH"],
        "k8s_reads": client.calls["GET"],
        "peak_mib": max(peak, rss_mib()),
    }


async def run(objects: int, new: int) -> list[tuple[str, dict[str, Any]]]:
    rows: list[tuple[str, dict[str, Any]]] = []
    with run_local_s3() as s3:
        env = s3.environment()
        os.environ.update(env)
        s3_client = boto3.client("s3", endpoint_url=s3.endpoint, region_name=env["AWS_DEFAULT_REGION"])
        s3_client.create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        put_objects(s3_client, [f"{PREFIX}{index:07}.csv" for index in range(objects)])
        print(f"  {objects:,} objects uploaded to moto in {time.perf_counter() - started:.0f} s", flush=True)
        with emulator_process() as url:
            async with CountingClient(kube.Connection(server=url), timeout=120) as client:
                settings = OperatorSettings(namespace=NAMESPACE, sweep_max_create=objects + 10 * new)
                state = State(settings=settings, client=client)
                body = {
                    "apiVersion": resource.API_VERSION,
                    "kind": sources.KIND,
                    "metadata": {"name": "bench", "namespace": NAMESPACE},
                    "spec": {"bucket": BUCKET, "prefix": PREFIX, "interval": "1h"},
                }
                await client.create(kube.CRAWLSOURCES, NAMESPACE, body)
                lister = S3Lister()
                rows.append(("backfill (view)", await one_pass(state, client, lister, True)))
                print("  backfill done", flush=True)
                rows.append(("steady, 0 new (view)", await one_pass(state, client, lister, True)))
                put_objects(s3_client, [f"{PREFIX}new-a-{index:05}.csv" for index in range(new)])
                rows.append((f"steady, {new} new (view)", await one_pass(state, client, lister, True)))
                put_objects(s3_client, [f"{PREFIX}new-b-{index:05}.csv" for index in range(new)])
                rows.append((f"steady, {new} new (stateless)", await one_pass(state, client, lister, False)))
                names = [item["metadata"]["name"] for item in await client.list(kube.CRAWLJOBS, NAMESPACE)]
                duplicates = len(names) - len(set(names))
                print(
                    f"  CrawlJobs: {len(names):,} for {objects + 2 * new:,} objects, duplicates: {duplicates}"
                )
                assert len(set(names)) == objects + 2 * new and duplicates == 0
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"\nsweep benchmark: {args.objects:,} objects under one prefix in moto, emulator API, one source")
    rss_before = psutil.Process().memory_info().rss
    rows = asyncio.run(run(args.objects, args.new))
    rss_after = psutil.Process().memory_info().rss
    header = f"| {'pass':<28} | {'seconds':>8} | {'listed':>8} | {'created':>8} | {'S3 calls':>8} | {'K8s writes':>10} | {'K8s reads':>9} | {'peak RSS MiB':>12} |"
    print("\n" + header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, row in rows:
        print(
            f"| {name:<28} | {row['seconds']:>8.1f} | {row['listed']:>8,} | {row['created']:>8,} | "
            f"{row['s3_calls']:>8,} | {row['k8s_writes']:>10,} | {row['k8s_reads']:>9,} | {row['peak_mib']:>12.0f} |"
        )
    print(
        "\npeak RSS: this process (the sweeper, its view of every CrawlJob as the operator holds it, boto3; "
        f"the emulator and moto run apart), sampled every 50 ms; {rss_before / 2**20:.0f} MiB at start, "
        f"{rss_after / 2**20:.0f} MiB at the end. K8s writes: CrawlJob creates, the status patch, Events."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
