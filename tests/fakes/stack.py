"""Helpers for the operator's integration tests: the operator as a real process, the job runner, waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from crawljob import kube, resource
from crawljob.local.runner import JobRunner
from fakes.waiting import wait_for

FAKE_WORKER = Path(__file__).with_name("worker.py")
NAMESPACE = "default"


def crawljob(key: str, bucket: str = "bucket", **spec: Any) -> dict[str, Any]:
    """A CrawlJob body for *key* (the fake worker reads its behaviour from the key)."""
    ref = resource.ObjectRef(bucket=bucket, key=key)
    body = resource.crawljob_manifest(ref, NAMESPACE)
    body["spec"].update(spec)  # type: ignore[union-attr]
    return body


async def events_of(client: kube.KubeClient, name: str) -> list[dict[str, Any]]:
    """The Events about the object *name* in the test namespace."""
    return [
        event
        for event in await client.list(kube.EVENTS, NAMESPACE)
        if (event.get("involvedObject") or {}).get("name") == name
    ]


class OperatorProcess:
    """`crawljob operator` as a child process (so that tests can SIGKILL it). As an async context
    manager it is stopped at the exit, however the test ends (started and restarted by the test)."""

    def __init__(self, url: str, log_path: Path, **flags: Any) -> None:
        self.url = url
        self.log_path = log_path
        self.flags = {"max-active": 8, "resync-seconds": 2, "health-port": 0, "log-format": "text", **flags}
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "crawljob.cli",
            "operator",
            "--kube-server",
            self.url,
            "--namespace",
            NAMESPACE,
        ]
        for name, value in self.flags.items():
            args += [f"--{name}", str(value)]
        env = {**os.environ, "CRAWLJOB_WORKER_COMMAND": json.dumps([sys.executable, str(FAKE_WORKER)])}
        env.pop("KUBECONFIG", None)
        handle = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(*args, env=env, stdout=handle, stderr=handle)
        handle.close()

    async def __aenter__(self) -> OperatorProcess:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                await self.kill()


@contextlib.asynccontextmanager
async def running_operator(url: str, log_path: Path, **flags: Any) -> AsyncIterator[OperatorProcess]:
    async with OperatorProcess(url, log_path, **flags) as operator:
        await operator.start()
        yield operator


@contextlib.asynccontextmanager
async def running_runner(
    client: kube.KubeClient, extra_env: Mapping[str, str] | None = None, **options: Any
) -> AsyncIterator[JobRunner]:
    runner = JobRunner(client, NAMESPACE, dict(extra_env or {}), **options)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def count_job_creations(client: kube.KubeClient, counts: Counter[str]) -> None:
    """Count every Job creation (ADDED) in NAMESPACE by name, for as long as the task runs."""
    async for event in client.watch(kube.JOBS, NAMESPACE):
        if event["type"] == "ADDED":
            counts[event["object"]["metadata"]["name"]] += 1


async def wait_until(predicate: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll *predicate* until truthy; TimeoutError naming *what* otherwise."""
    return await wait_for(predicate, timeout=timeout, interval=0.1, what=what)


async def wait_phase(
    client: kube.KubeClient, name: str, phases: set[str], timeout: float = 30
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await client.get(kube.CRAWLJOBS, NAMESPACE, name)
        return body if (body.get("status") or {}).get("phase") in phases else None

    try:
        result: dict[str, Any] = await wait_until(check, timeout, f"{name} in {phases}")
    except TimeoutError:
        body = await client.get(kube.CRAWLJOBS, NAMESPACE, name)
        raise AssertionError(f"{name} never reached {phases}: status={body.get('status')}") from None
    return result
