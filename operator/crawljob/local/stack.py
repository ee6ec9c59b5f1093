"""`crawljob run`: the whole pipeline on one machine, processing a sample file end to end.

Kubernetes API emulator (in this process) + moto S3 (child process) + receiver and operator
(child processes, started exactly as in a cluster, by their commands and CRAWLJOB_* env) + the
local job runner (in this process: plays kubelet and Job controller, runs the worker locally).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import boto3

from crawljob import kube, sources
from crawljob.local.display import render_result, render_table
from crawljob.local.emulator import serve_emulator
from crawljob.local.runner import JobRunner
from crawljob.local.s3 import LocalS3, free_port, run_local_s3
from crawljob.local.sample import generate_csv
from crawljob.resource import API_VERSION, TERMINAL_PHASES, ObjectRef, crawljob_name


@dataclass(frozen=True)
class StackSettings:
    """How to lay out the local stack; ports of 0 mean "any free port"."""

    namespace: str = "default"
    host: str = "127.0.0.1"
    receiver_port: int = 0
    kube_port: int = 0
    s3_port: int = 0
    input_bucket: str = "crawljob-inbox"
    output_bucket: str = "crawljob-results"
    max_active: int = 4
    runner_parallel: int = 2
    work_dir: Path | None = None
    operator_env: Mapping[str, str] = field(default_factory=dict)
    receiver_env: Mapping[str, str] = field(default_factory=dict)


def output_uri(config: StackSettings) -> str:
    """Where the local operator's crawls write (the chart's worker.defaultOutputUri)."""
    return f"s3://{config.output_bucket}/"


def receiver_environment(config: StackSettings) -> dict[str, str]:
    """The receiver's settings as the chart sets them: the same output URI as the operator (its
    loop guard), the default bucket and the chart's filters (none by default). Auth is off: the
    stack listens on loopback only."""
    return {
        "CRAWLJOB_DEFAULT_BUCKET": config.input_bucket,
        "CRAWLJOB_DEFAULT_OUTPUT_URI": output_uri(config),
        "CRAWLJOB_AUTH_MODE": "none",
    }


@dataclass
class Stack:
    """A running local stack: its addresses, clients and child processes."""

    settings: StackSettings
    kube_url: str
    s3: LocalS3
    receiver_url: str
    work_dir: Path
    client: kube.KubeClient
    s3_client: Any
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    @property
    def bin_dir(self) -> Path:
        return Path(sys.executable).parent

    def log_path(self, part: str) -> Path:
        return self.work_dir / f"{part}.log"

    def log_tail(self, part: str, lines: int = 30) -> str:
        path = self.log_path(part)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def upload(self, path: Path, key: str, bucket: str | None = None) -> dict[str, Any]:
        """Upload a local file (multipart for large ones); the object's head (ETag, size)."""
        target = bucket or self.settings.input_bucket
        self.s3_client.upload_file(str(path), target, key)
        head: dict[str, Any] = self.s3_client.head_object(Bucket=target, Key=key)
        return head

    def s3_event(self, key: str, bucket: str | None = None, etag: str = "", size: int = 0) -> dict[str, Any]:
        """An S3 event notification for one created object, as S3 (or MinIO) sends it."""
        return {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "bucket": {"name": bucket or self.settings.input_bucket},
                        "object": {
                            "key": quote_plus(key, safe="/"),
                            "size": size,
                            "eTag": etag.strip('"'),
                            "sequencer": f"{time.time_ns():X}",
                        },
                    },
                }
            ]
        }

    async def post_event(self, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST a webhook body to the receiver; its status and JSON answer."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.receiver_url}/v1/trigger", json=body) as response,
        ):
            try:
                answer: dict[str, Any] = await response.json(content_type=None)
            except ValueError:
                answer = {"text": await response.text()}
            return response.status, answer

    async def trigger(self, key: str, bucket: str | None = None) -> str:
        """Post the event of an existing object; the name of its CrawlJob."""
        target = bucket or self.settings.input_bucket
        try:
            head = self.s3_client.head_object(Bucket=target, Key=key)
            etag, size = str(head["ETag"]).strip('"'), int(head["ContentLength"])
        except self.s3_client.exceptions.ClientError:
            etag, size = "0" * 32, 0  # no such object: still a valid event, the crawl will say so
        status, answer = await self.post_event(self.s3_event(key, target, etag, size))
        if status != 202:
            raise RuntimeError(f"receiver answered {status}: {answer}")
        return crawljob_name(ObjectRef(bucket=target, key=key, etag=etag))

    async def crawljobs(self) -> list[dict[str, Any]]:
        return await self.client.list(kube.CRAWLJOBS, self.settings.namespace)

    async def wait_finished(
        self,
        name: str,
        timeout: float = 300.0,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait until the CrawlJob reaches a terminal phase; calls *on_change* when its status moves."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            self.check_processes()
            try:
                crawljob = await self.client.get(kube.CRAWLJOBS, self.settings.namespace, name)
            except kube.NotFound:
                crawljob = {}
            status = crawljob.get("status") or {}
            seen = (status.get("phase"), (status.get("progress") or {}).get("percent"))
            if crawljob and seen != last:
                last = seen
                if on_change is not None:
                    on_change(crawljob)
            if status.get("phase") in TERMINAL_PHASES:
                return crawljob
            if time.monotonic() > deadline:
                raise TimeoutError(f"CrawlJob {name} did not finish in {timeout:.0f}s (last: {seen})")
            await asyncio.sleep(0.3)

    def check_processes(self) -> None:
        """Raise with the log tail if the receiver or the operator died."""
        for part, process in self.processes.items():
            if process.returncode is not None:
                raise RuntimeError(
                    f"the {part} exited with code {process.returncode}; last lines of its log:\n"
                    + self.log_tail(part)
                )


def _worker_env(s3: LocalS3) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in sorted(s3.environment().items())]


async def _start_process(
    stack: Stack, part: str, argv: Sequence[str], env: Mapping[str, str]
) -> asyncio.subprocess.Process:
    log = stack.log_path(part).open("ab")
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    finally:
        log.close()
    stack.processes[part] = process
    return process


async def _wait_http_ok(stack: Stack, part: str, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            stack.check_processes()
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the {part} did not answer {url} within {timeout:.0f}s:\n" + stack.log_tail(part)
                )
            await asyncio.sleep(0.2)


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def local_stack(settings: StackSettings | None = None) -> AsyncIterator[Stack]:
    """Start every part of the local stack; stop them all on exit."""
    config = settings or StackSettings()
    work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="crawljob-run-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as exits:
        emulator, kube_url = await exits.enter_async_context(
            serve_emulator(config.host, config.kube_port or None)
        )
        emulator.pod_log_dir = work_dir / "pods"  # `kubectl logs` reads what the runner kept there
        s3 = exits.enter_context(run_local_s3(config.host, config.s3_port or None))
        env = s3.environment()
        s3_client = boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )
        for bucket in (config.input_bucket, config.output_bucket):
            s3_client.create_bucket(Bucket=bucket)
        client = await exits.enter_async_context(kube.KubeClient(kube.Connection(server=kube_url)))
        receiver_port = config.receiver_port or free_port(config.host)
        stack = Stack(
            settings=config,
            kube_url=kube_url,
            s3=s3,
            receiver_url=f"http://{config.host}:{receiver_port}",
            work_dir=work_dir,
            client=client,
            s3_client=s3_client,
        )
        common = {
            "CRAWLJOB_KUBE_SERVER": kube_url,
            "CRAWLJOB_NAMESPACE": config.namespace,
            "CRAWLJOB_LOG_FORMAT": "text",
        }
        crawljob = str(stack.bin_dir / "crawljob")
        health_port = free_port(config.host)
        await _start_process(
            stack,
            "operator",
            [crawljob, "operator"],
            {
                **common,
                "CRAWLJOB_HEALTH_PORT": str(health_port),
                "CRAWLJOB_MAX_ACTIVE": str(config.max_active),
                "CRAWLJOB_DEFAULT_OUTPUT_URI": output_uri(config),
                "CRAWLJOB_WORKER_IMAGE": "crawljob-worker:local",
                "CRAWLJOB_WORKER_ENV": json.dumps(_worker_env(s3)),
                # CrawlSource sweeps list the local S3 (the standard AWS_* variables, as in a cluster).
                **s3.environment(),
                **config.operator_env,
            },
        )
        await _start_process(
            stack,
            "receiver",
            [crawljob, "receiver"],
            {
                **common,
                "CRAWLJOB_HOST": config.host,
                "CRAWLJOB_PORT": str(receiver_port),
                **receiver_environment(config),
                # The receiver reads the local S3, so a minimal event names the upload it means.
                "CRAWLJOB_RESOLVE_VERSIONS": "true",
                **s3.environment(),
                **config.receiver_env,
            },
        )
        for process in stack.processes.values():
            exits.push_async_callback(_stop_process, process)
        runner = JobRunner(
            client,
            config.namespace,
            extra_env={"CRAWLJOB_KUBE_SERVER": kube_url},
            bin_dir=stack.bin_dir,
            max_parallel=config.runner_parallel,
            log_dir=work_dir / "pods",
        )
        runner_task = asyncio.create_task(runner.run(), name="job-runner")

        async def stop_runner() -> None:
            runner_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner_task

        exits.push_async_callback(stop_runner)
        await _wait_http_ok(stack, "receiver", f"{stack.receiver_url}/healthz")
        await _wait_http_ok(stack, "operator", f"http://{config.host}:{health_port}/readyz")
        yield stack


SAMPLE_SOURCE = "iot-exports"
SAMPLE_PREFIX = "iot/exports/"


def sample_source(settings: StackSettings, interval: str = "1m") -> dict[str, Any]:
    """The CrawlSource `crawljob run` creates: the sample's prefix, swept every minute, Parquet output."""
    return {
        "apiVersion": API_VERSION,
        "kind": sources.KIND,
        "metadata": {"name": SAMPLE_SOURCE, "namespace": settings.namespace},
        "spec": {
            "bucket": settings.input_bucket,
            "prefix": SAMPLE_PREFIX,
            "suffixes": [".csv", ".csv.gz"],
            "interval": interval,
            "template": {"output": {"format": "parquet"}, "maxRejectRatio": 0.01},
        },
    }


async def backfill_demo(stack: Stack, files: int, size_mb: float) -> bool:
    """Files already in the bucket before the CrawlSource exists, crawled by its first sweep (no webhook)."""
    settings = stack.settings
    names = []
    for index in range(files):
        key = f"{SAMPLE_PREFIX}backfill/readings-{index + 1:02}.csv"
        sample = generate_csv(stack.work_dir / f"backfill-{index}.csv", max(1, int(size_mb * 2**20)))
        head = stack.upload(sample.path, key)
        names.append(crawljob_name(ObjectRef(settings.input_bucket, key, etag=str(head["ETag"]).strip('"'))))
        print(f"  uploaded s3://{settings.input_bucket}/{key} ({sample.rows:,} rows), no event posted")
    await stack.client.create(kube.CRAWLSOURCES, settings.namespace, sample_source(settings))
    print(f"CrawlSource {SAMPLE_SOURCE} created: its first sweep finds them\n")
    finished = [await stack.wait_finished(name, timeout=600, on_change=_print_named) for name in names]
    print("\n" + render_table(finished) + "\n")
    return all((item.get("status") or {}).get("phase") == "Succeeded" for item in finished)


def _print_named(crawljob: dict[str, Any]) -> None:
    status = crawljob.get("status") or {}
    print(
        f"  {time.strftime('%H:%M:%S')}  {crawljob['metadata']['name']}: {status.get('phase') or 'Created'}"
    )


async def kubectl_command(stack: Stack, plural: str = "crawljobs") -> str | None:
    """A `kubectl get <plural>` command that works against the emulator, if kubectl is installed."""
    kubectl = shutil.which("kubectl", path=f"{stack.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if kubectl is None:
        return None
    kubeconfig = stack.work_dir / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": stack.kube_url}}],
                "users": [{"name": "local", "user": {}}],
                "contexts": [
                    {
                        "name": "local",
                        "context": {"cluster": "local", "user": "local", "namespace": "default"},
                    }
                ],
                "current-context": "local",
            }
        )
    )
    command = [kubectl, "--kubeconfig", str(kubeconfig), "get", plural]
    # Asynchronously: the emulator answering kubectl runs on this very event loop.
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        code = await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    return " ".join(command) if code == 0 else None


def _print_progress(crawljob: dict[str, Any]) -> None:
    status = crawljob.get("status") or {}
    progress = status.get("progress") or {}
    detail = (
        f" {progress.get('percent')} ({progress.get('rowsRead', 0):,} rows)"
        if progress.get("percent")
        else ""
    )
    print(f"  {time.strftime('%H:%M:%S')}  {status.get('phase') or 'Created'}{detail}", flush=True)


async def _follow(stack: Stack, stop: asyncio.Event) -> None:
    """Print each CrawlJob whose phase changes, until *stop* is set."""
    phases = {
        item["metadata"]["name"]: (item.get("status") or {}).get("phase") for item in await stack.crawljobs()
    }
    while not stop.is_set():
        stack.check_processes()
        for item in await stack.crawljobs():
            name = item["metadata"]["name"]
            phase = (item.get("status") or {}).get("phase")
            if phases.get(name, "?") != phase:
                phases[name] = phase
                print(f"  {time.strftime('%H:%M:%S')}  {name}: {phase or 'Created'}", flush=True)
                if phase in TERMINAL_PHASES:
                    print(render_result(item), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def run_demo(settings: StackSettings, size_mb: float, once: bool, backfill: int = 0) -> int:
    """Start the stack, process one generated file, show the outcome, then serve until Ctrl-C.

    With *backfill* files, they are uploaded before the sample CrawlSource exists and crawled by its
    first sweep, without any webhook.
    """
    print(
        "crawljob local stack: starting the API emulator, S3, receiver, operator and job runner ...",
        flush=True,
    )
    async with local_stack(settings) as stack:
        print(f"  Kubernetes API (emulator)  {stack.kube_url}")
        print(f"  S3 (moto)                  {stack.s3.endpoint}")
        print(f"  receiver                   {stack.receiver_url}/v1/trigger")
        print(f"  logs                       {stack.work_dir}")
        backfilled = True
        if backfill:
            print(f"\nBackfill: {backfill} files already in the bucket under {SAMPLE_PREFIX}backfill/ ...")
            backfilled = await backfill_demo(stack, backfill, min(size_mb, 1.0))
        else:
            await stack.client.create(kube.CRAWLSOURCES, settings.namespace, sample_source(settings))
        print(
            f"CrawlSource {SAMPLE_SOURCE}: s3://{settings.input_bucket}/{SAMPLE_PREFIX}, swept every minute; "
            "its events get its template"
        )
        key = f"{SAMPLE_PREFIX}sensor-readings.csv"
        sample = generate_csv(stack.work_dir / "sensor-readings.csv", int(size_mb * 2**20))
        print(f"\nGenerated {sample.path.name}: {sample.size / 2**20:.1f} MiB, {sample.rows:,} data rows")
        stack.upload(sample.path, key)
        print(f"Uploaded to s3://{settings.input_bucket}/{key}; posting its S3 event to the receiver ...")
        name = await stack.trigger(key)
        print(f"CrawlJob {name} accepted\n")
        crawljob = await stack.wait_finished(name, timeout=1800, on_change=_print_progress)
        print("\n" + render_table(await stack.crawljobs()) + "\n")
        print(render_result(crawljob))
        rows = ((crawljob.get("status") or {}).get("result") or {}).get("rowsRead")
        verdict = "matches" if rows == sample.rows else "DOES NOT match"
        print(f"  rows read {rows} {verdict} the {sample.rows} rows generated")
        succeeded = (
            (crawljob.get("status") or {}).get("phase") == "Succeeded" and rows == sample.rows and backfilled
        )
        kubectl = await kubectl_command(stack)
        kubectl_sources = await kubectl_command(stack, "crawlsources")
        print("\nTrigger another crawl (upload first, e.g. with the AWS CLI and the endpoint above):")
        print(
            f"  curl -sS -X POST {stack.receiver_url}/v1/trigger -H 'Content-Type: application/json' "
            f"""-d '{{"bucket": "{settings.input_bucket}", "object": {{"key": "{key}"}}}}'"""
        )
        if kubectl:
            print(f"Watch CrawlJobs with kubectl:\n  {kubectl}")
        if kubectl_sources:
            print(f"CrawlSources (sweeps: webhook-less pick-up):\n  {kubectl_sources}")
        if once:
            return 0 if succeeded else 1
        print("\nServing; Ctrl-C stops everything.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await _follow(stack, stop)
        print("\nStopping ...")
        return 0 if succeeded else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crawljob run",
        description="Run crawljob locally (API emulator, S3, receiver, operator, job runner) and process "
        "a generated IoT-style CSV end to end.",
    )
    parser.add_argument("--once", action="store_true", help="exit after the sample file is processed")
    parser.add_argument("--size-mb", type=float, default=50.0, help="size of the generated CSV (default 50)")
    parser.add_argument("--port", type=int, default=8080, help="receiver port (default 8080; 0 = any free)")
    parser.add_argument("--kube-port", type=int, default=0, help="emulator port (default: any free)")
    parser.add_argument("--s3-port", type=int, default=0, help="S3 port (default: any free)")
    parser.add_argument("--max-active", type=int, default=4, help="concurrency cap of the operator")
    parser.add_argument(
        "--backfill",
        type=int,
        nargs="?",
        const=4,
        default=0,
        metavar="N",
        help="first put N files (default 4) under the sample CrawlSource's prefix with no event: its "
        "first sweep crawls them",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where logs and the sample go (default: a temp dir)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    settings = StackSettings(
        receiver_port=args.port,
        kube_port=args.kube_port,
        s3_port=args.s3_port,
        max_active=args.max_active,
        work_dir=args.work_dir,
    )
    try:
        return asyncio.run(run_demo(settings, args.size_mb, args.once, args.backfill))
    except KeyboardInterrupt:
        return 130
