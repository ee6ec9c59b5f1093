"""`make bench-kube-client`: crawljob's own async client (`crawljob.kube`) against kubernetes_asyncio.

What decided to keep `kube.py` (docs/architecture.md): the cost of importing each client (CPU seconds
and resident memory, in a fresh interpreter) and the latency and throughput of the calls the receiver
and the operator make (GET a CrawlJob, merge-patch its status), against the Kubernetes API emulator on
loopback, both clients in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from crawljob import kube, resource
from crawljob.local.emulator import serve_emulator

NAMESPACE, NAME = "bench", "one"
IMPORTS = {
    "crawljob.kube (aiohttp)": "import crawljob.kube",
    "kubernetes_asyncio (client, config)": "import kubernetes_asyncio.client, kubernetes_asyncio.config",
}
PROBE = """
import resource, time
started = time.process_time()
{statement}
cpu = time.process_time() - started
print(cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

Call = Callable[[int], Awaitable[Any]]


def import_cost(statement: str, repeat: int) -> tuple[float, float]:
    """Median CPU seconds of the import, and peak RSS (MB) of the interpreter after it."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(statement=statement)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        runs.append((float(out[0]), float(out[1])))
    return statistics.median(cpu for cpu, _ in runs), statistics.median(rss for _, rss in runs)


async def timed(call: Call, count: int, concurrency: int) -> tuple[float, float]:
    """p50 latency (ms) and requests per second of *count* calls, *concurrency* at a time."""
    latencies: list[float] = []
    queue = iter(range(count))

    async def lane() -> None:
        for index in queue:
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return statistics.median(latencies) * 1000, count / elapsed


async def ours(url: str) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    client = kube.KubeClient(kube.Connection(server=url))
    await client.open()

    async def get(_: int) -> Any:
        return await client.get(kube.CRAWLJOBS, NAMESPACE, NAME)

    async def patch(index: int) -> Any:
        body = {"status": {"progress": {"rowsRead": index}}}
        return await client.patch(kube.CRAWLJOBS, NAMESPACE, NAME, body, "status")

    return get, patch, client.close


async def theirs(url: str) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    from kubernetes_asyncio import client

    api_client = client.ApiClient(client.Configuration(host=url))
    api = client.CustomObjectsApi(api_client)
    group, version, plural = resource.GROUP, resource.VERSION, resource.PLURAL

    async def get(_: int) -> Any:
        return await api.get_namespaced_custom_object(group, version, NAMESPACE, plural, NAME)

    async def patch(index: int) -> Any:
        body = {"status": {"progress": {"rowsRead": index}}}
        return await api.patch_namespaced_custom_object_status(
            group, version, NAMESPACE, plural, NAME, body, _content_type="application/merge-patch+json"
        )

    return get, patch, api_client.close


async def one_client(make: Callable[[str], Awaitable[tuple[Call, Call, Callable[[], Awaitable[None]]]]],
                     count: int, concurrency: int) -> dict[str, tuple[float, float]]:  # fmt: skip
    """One client against a fresh emulator (kmock keeps every object's history: a shared one would
    make whichever client runs later pay for the earlier one's patches)."""
    async with serve_emulator() as (_, url):
        async with kube.KubeClient(kube.Connection(server=url)) as setup:
            await setup.create(kube.CRAWLJOBS, NAMESPACE, {
                "apiVersion": resource.API_VERSION, "kind": resource.KIND,
                "metadata": {"name": NAME, "namespace": NAMESPACE}, "spec": {"bucket": "b", "key": "k.csv"},
            })  # fmt: skip
        get, patch, close = await make(url)
        try:
            await get(0)  # connect, warm up
            return {
                "get": await timed(get, count, 1),
                "get x concurrency": await timed(get, count, concurrency),
                "patch": await timed(patch, count, 1),
            }
        finally:
            await close()


async def requests(count: int, concurrency: int) -> dict[str, dict[str, tuple[float, float]]]:
    clients = (("crawljob.kube (aiohttp)", ours), ("kubernetes_asyncio (client, config)", theirs))
    results: dict[str, dict[str, tuple[float, float]]] = {}
    # Two rounds in alternating order; the second is kept (the first warms up imports and caches).
    for label, make in [*clients, *reversed(clients)]:
        results[label] = await one_client(make, count, concurrency)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight for the throughput row")
    parser.add_argument("--repeat", type=int, default=5, help="fresh interpreters per import measurement")
    args = parser.parse_args(argv)
    imports = {label: import_cost(statement, args.repeat) for label, statement in IMPORTS.items()}
    calls = asyncio.run(requests(args.requests, args.concurrency))
    print(f"\nKubernetes API clients against the emulator on loopback ({args.requests} calls per cell)")
    header = (
        f"{'client':<37} {'import CPU s':>12} {'RSS MB':>7} {'GET p50 ms':>11} {'GET/s':>7} "
        f"{'PATCH p50 ms':>13} {'PATCH/s':>8} {f'GET/s x{args.concurrency}':>10}"
    )
    print(header)
    for label, (cpu, rss) in imports.items():
        get, patch, parallel = calls[label]["get"], calls[label]["patch"], calls[label]["get x concurrency"]
        print(
            f"{label:<37} {cpu:>12.3f} {rss:>7.1f} {get[0]:>11.2f} {get[1]:>7.0f} "
            f"{patch[0]:>13.2f} {patch[1]:>8.0f} {parallel[1]:>10.0f}"
        )


if __name__ == "__main__":
    main()
