"""Receiver benchmark: a bare aiohttp handler vs the receiver, same load generator, on loopback.

Servers run as child processes (the load generator is this process):
- bare: an aiohttp POST handler that reads and decodes the JSON body and answers 202;
- receiver → emulator: `crawljob receiver` creating one CrawlJob per request in the kmock
  emulator (its own process);
- receiver → API stub: the same receiver against a minimal in-memory create endpoint, which
  isolates the receiver's own cost from the emulator's (kmock scans every object per create);
- receiver → real API server: the same receiver against kube-apiserver 1.20 + etcd (data on
  tmpfs) of `make test-cluster`, a fresh namespace per run; a target only when that control plane
  is built (bench/realcluster.py), what a user gets from a real cluster (TLS, validation, etcd).

Each gets a closed-loop run (fixed concurrency, max req/s) and an open-loop run at a fixed rate
(latency measured from each request's scheduled time, so a falling-behind server shows).
Every request names a new object, so each is a real create. Usage: `make bench-receiver`,
or `python bench/receiver.py [--requests N] [--rate R] [--seconds S] [--concurrency C]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import realcluster  # bench/realcluster.py (the script's directory is on sys.path)
from aiohttp import web
from realcluster import RealCluster

ROOT = Path(__file__).resolve().parent.parent


# ---- the servers (each runs in its own process: `python bench/receiver.py serve-<role> PORT`) ----


def serve_bare(port: int) -> None:
    """The baseline: parse the JSON body, answer 202 with a small JSON document."""

    async def handler(request: web.Request) -> web.Response:
        document = json.loads(await request.read())
        key = document["Records"][0]["s3"]["object"]["key"]
        return web.json_response({"crawljobs": [{"key": key, "status": "created"}]}, status=202)

    app = web.Application()
    app.router.add_post("/v1/trigger", handler)
    app.router.add_get("/healthz", lambda request: _ok())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def _ok() -> web.Response:
    return web.json_response({"status": "ok"})


def serve_stub_api(port: int) -> None:
    """A Kubernetes API reduced to what the receiver calls: create (201/409) and /version."""
    names: set[str] = set()

    async def create(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        name = body["metadata"]["name"]
        if name in names:
            return web.json_response({"kind": "Status", "code": 409, "message": "exists"}, status=409)
        names.add(name)
        return web.json_response(body, status=201)

    app = web.Application()
    app.router.add_post("/apis/crawljob.io/v1alpha1/namespaces/{namespace}/crawljobs", create)
    app.router.add_get("/version", lambda request: _ok())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_emulator(port: int) -> None:
    """The project's kmock emulator, minus kmock's O(history) request log and O(objects) create answer."""
    import attrs
    import kmock

    from crawljob.local.emulator import Emulator, register_crawljob_crd

    @attrs.define(kw_only=True)
    class ForgetfulEmulator(Emulator):
        # kmock answers a create by scanning every stored object: look the new one up by key instead.
        async def _serve_create(self, request: kmock.Request) -> Any:
            metadata = request.data.get("metadata", {})
            key = (request.resource, request.namespace or metadata.get("namespace"), metadata.get("name"))
            async with self._lock:
                return self._objects[key].raw

        async def _handle(self, request: kmock.Request) -> web.StreamResponse:
            try:
                return await super()._handle(request)
            finally:
                with contextlib.suppress(ValueError):
                    self._requests.remove(request)

    async def main() -> None:
        emulator = ForgetfulEmulator()
        emulator.resources.load_bundled()
        register_crawljob_crd(emulator)
        async with emulator, kmock.Server(emulator, host="127.0.0.1", port=port):
            await asyncio.Event().wait()

    asyncio.run(main())


# ---- process management ----


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def child(command: list[str], extra_env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_until_up(url: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                    if response.status < 500:
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not come up within {limit:.0f}s")
            await asyncio.sleep(0.1)


@dataclass
class Servers:
    url: str
    front: subprocess.Popen[bytes]  # the process answering /v1/trigger

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.front.pid).cpu_times()
        return float(times.user + times.system)


@contextlib.contextmanager
def start(target: str, cluster: RealCluster | None = None) -> Iterator[Servers]:
    """Start the servers for *target*; yields the trigger URL and the front process."""
    script = str(Path(__file__).resolve())
    port = free_port()
    with contextlib.ExitStack() as stack:
        if target == "bare":
            front = stack.enter_context(child([sys.executable, script, "serve-bare", str(port)]))
            asyncio.run(wait_until_up(f"http://127.0.0.1:{port}/healthz"))
        elif target == "real":
            assert cluster is not None
            namespace = asyncio.run(cluster.namespace())
            receiver = [
                sys.executable, "-m", "crawljob.cli", "receiver", "--host", "127.0.0.1",
                "--port", str(port), "--namespace", namespace,
            ]  # fmt: skip
            front = stack.enter_context(child(receiver, {"KUBECONFIG": str(cluster.kubeconfig)}))
            asyncio.run(wait_until_up(f"http://127.0.0.1:{port}/readyz"))
        else:
            api_port = free_port()
            role = "serve-emulator" if target == "emulator" else "serve-stub-api"
            stack.enter_context(child([sys.executable, script, role, str(api_port)]))
            asyncio.run(wait_until_up(f"http://127.0.0.1:{api_port}/version"))
            receiver = [
                sys.executable, "-m", "crawljob.cli", "receiver", "--host", "127.0.0.1",
                "--port", str(port), "--kube-server", f"http://127.0.0.1:{api_port}", "--namespace", "bench",
            ]  # fmt: skip
            front = stack.enter_context(child(receiver))
            asyncio.run(wait_until_up(f"http://127.0.0.1:{port}/readyz"))
        yield Servers(f"http://127.0.0.1:{port}/v1/trigger", front)


# ---- the load generator ----


def event_body(index: int, run: str) -> bytes:
    key = f"bench/{run}/sensor+{index % 97}/reading-{index}.csv"
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventTime": "2026-11-28T10:00:00.000Z",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": "bench-bucket"},
                        "object": {"key": key, "size": 1024 + index, "eTag": f"{index:032x}"},
                    },
                }
            ]
        }
    ).encode()


@dataclass
class Result:
    target: str
    mode: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    server_cpu: float = 0.0  # CPU seconds the front process spent during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


@contextlib.asynccontextmanager
async def client(concurrency: int) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        await response.read()
        return response.status


async def closed_loop(url: str, target: str, requests: int, concurrency: int) -> Result:
    run = f"max-{time.time_ns()}"
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    async with client(concurrency) as session:
        for index in range(min(50, requests)):  # warm up connections and caches
            await post(session, url, event_body(index, run + "-warm"))

        async def worker() -> None:
            nonlocal errors
            for index in counter:
                started = time.perf_counter()
                status = await post(session, url, event_body(index, run))
                latencies.append(time.perf_counter() - started)
                errors += status != 202

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return Result(target, f"max, {concurrency} connections", requests, elapsed, latencies, errors)


async def open_loop(url: str, target: str, rate: float, seconds: float) -> Result:
    run = f"rate-{time.time_ns()}"
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    async with client(256) as session:
        for index in range(min(50, total)):
            await post(session, url, event_body(index, run + "-warm"))

        async def one(index: int, scheduled: float) -> None:
            nonlocal errors
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await post(session, url, event_body(index, run))
            latencies.append(time.perf_counter() - scheduled)
            errors += status != 202

        began = time.perf_counter()
        await asyncio.gather(*(one(index, began + index / rate) for index in range(total)))
        elapsed = time.perf_counter() - began
    return Result(target, f"open loop {rate:.0f} req/s", total, elapsed, latencies, errors)


LABELS = {
    "bare": "bare aiohttp handler",
    "emulator": "receiver -> kmock emulator",
    "stub": "receiver -> in-memory API stub",
    "real": "receiver -> real kube-apiserver",
}


def table(results: list[Result]) -> str:
    header = (
        f"{'target':<32} {'mode':<24} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-202':>8}"
        f" {'server CPU ms/req':>18}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        lines.append(
            f"{LABELS[result.target]:<32} {result.mode:<24} {result.requests:>8} {result.rate:>8.0f} "
            f"{result.percentile(0.50):>8.1f} {result.percentile(0.99):>8.1f} {result.errors:>8}"
            f" {result.server_cpu * 1000 / (result.requests + 50):>18.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0].startswith("serve-"):
        {"serve-bare": serve_bare, "serve-emulator": serve_emulator, "serve-stub-api": serve_stub_api}[
            args[0]
        ](int(args[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000, help="requests per closed-loop run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop request rate")
    parser.add_argument("--seconds", type=float, default=10.0, help="open-loop duration")
    parser.add_argument(
        "--targets",
        default="bare,emulator,stub,real" if realcluster.built() else "bare,emulator,stub",
        help="comma list of bare, emulator, stub, real (default: real too when the control plane is built)",
    )
    options = parser.parse_args(args)
    targets = options.targets.split(",")
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(realcluster.running()) if "real" in targets else None
        results = run_targets(targets, options, cluster)
    report(results, options.rate)
    return 0


def run_targets(targets: list[str], options: argparse.Namespace, cluster: RealCluster | None) -> list[Result]:
    results: list[Result] = []
    for target in targets:
        # A fresh server (and API, or namespace) per run: the emulator's cost grows with the objects it holds.
        for mode in ("max", "rate"):
            with start(target, cluster) as servers:
                cpu_before = servers.cpu_seconds()
                if mode == "max":
                    result = asyncio.run(
                        closed_loop(servers.url, target, options.requests, options.concurrency)
                    )
                else:
                    result = asyncio.run(open_loop(servers.url, target, options.rate, options.seconds))
                # Includes the 50 warm-up requests: close enough, and the same for every target.
                result.server_cpu = servers.cpu_seconds() - cpu_before
            results.append(result)
            print(f"  {LABELS[target]}, {result.mode}: {result.rate:.0f} req/s", file=sys.stderr)
    return results


def report(results: list[Result], rate: float) -> None:
    print(table(results))
    by_key = {(r.target, r.mode.split(",")[0].split(" ")[0]): r for r in results}
    bare = by_key.get(("bare", "max"))
    goal_lines = []
    for target in ("emulator", "stub", "real"):
        maximum, fixed = by_key.get((target, "max")), by_key.get((target, "open"))
        if bare and maximum:
            goal_lines.append(
                f"{LABELS[target]}: {maximum.rate / bare.rate:.0%} of the bare handler's req/s (goal >= 50%)"
                + (
                    f"; p99 at {rate:.0f} req/s {fixed.percentile(0.99):.1f} ms (goal < 20 ms)"
                    if fixed
                    else ""
                )
            )
    print("\n".join(goal_lines))
    print(f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    if results and statistics.fmean(r.errors for r in results) > 0:
        print("some requests were not answered 202: see the non-202 column", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
