"""`make bench-worker-startup`: how long the worker takes to start, seen from the wire.

The worker runs as a child process against a loopback S3 (moto) and the Kubernetes API emulator, each
behind a TCP forwarder that timestamps the first request line it sees. Per run: exec → first S3 GET,
exec → first status.progress PATCH (sent when the first block was parsed), exec → exit. The floors,
measured in the same run: `python -c pass` and `python -c "import pandas, pyarrow"`. "start imports" is
`python -X importtime` of the modules the worker imports before it parses (`__main__`, `run`).

`--worker-tree DIR` also runs the worker code of another checkout (DIR/job-image on PYTHONPATH), e.g.
`git worktree add /tmp/before main`: before and after in one table, on the same loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3

from crawljob import kube, resource
from crawljob.local.emulator import serve_emulator
from crawljob.local.s3 import run_local_s3

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"


@dataclass
class FirstRequest:
    """A TCP forwarder to *upstream* remembering when it first saw a request line starting with *verb*."""

    upstream: tuple[str, int]
    verb: bytes
    seen: float | None = None
    port: int = 0
    _server: Any = field(default=None, repr=False)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, watch: bool) -> None:
            try:
                while chunk := await source.read(65536):
                    if watch and self.seen is None and self.verb in chunk[:16]:
                        self.seen = time.monotonic()
                    sink.write(chunk)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


def start_imports(worker_path: Path, repeat: int) -> tuple[float, bool]:
    """`python -X importtime` of what the worker imports before its first block (`__main__`, then
    `run`): median cumulative seconds, and whether any `kubernetes` module was among them."""
    runs, kubernetes = [], False
    for _ in range(repeat):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import crawljob_worker.__main__, crawljob_worker.run"],
            env={**os.environ, "PYTHONPATH": str(worker_path)}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        lines = [line.split("|") for line in result.stderr.splitlines() if line.startswith("import time:")]
        tops = {"crawljob_worker.__main__", "crawljob_worker.run"}
        runs.append(sum(int(cumulative) for _, cumulative, name in lines if name.strip() in tops) / 1e6)
        kubernetes |= any(name.strip().split(".")[0] == "kubernetes" for _, _, name in lines)
    return statistics.median(runs), kubernetes


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 80


async def run_once(argv: list[str], environment: dict[str, str]) -> tuple[float, int]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv, env=environment, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    code = await process.wait()
    return started, code


async def measure(
    label: str, worker_path: Path | None, repeat: int, s3_url: str, api_url: str, client: kube.KubeClient
) -> dict[str, float]:
    """Median of *repeat* runs: exec → first GET, exec → first PATCH, exec → exit (seconds)."""
    firsts: dict[str, list[float]] = {"get": [], "patch": [], "exit": []}
    for index in range(repeat):
        name = f"{label.split()[0].lower()}-{index}"
        await client.create(kube.CRAWLJOBS, NAMESPACE, crawljob(name))
        s3_proxy = FirstRequest(host_port(s3_url), b"GET ")
        api_proxy = FirstRequest(host_port(api_url), b"PATCH ")
        await s3_proxy.start()
        await api_proxy.start()
        environment = {key: value for key, value in os.environ.items() if not key.startswith("CRAWLJOB_")}
        environment.update(worker_environment(s3_proxy.port, api_proxy.port, name))
        if worker_path is not None:
            environment["PYTHONPATH"] = str(worker_path)
        argv = [sys.executable, "-m", "crawljob_worker", "s3://bench/data.csv"]
        started, code = await run_once(argv, environment)
        ended = time.monotonic()
        await s3_proxy.stop()
        await api_proxy.stop()
        if code != 0 or s3_proxy.seen is None or api_proxy.seen is None:
            raise SystemExit(
                f"{label}: the worker exited {code} (GET seen: {s3_proxy.seen}, PATCH seen: {api_proxy.seen})"
            )
        firsts["get"].append(s3_proxy.seen - started)
        firsts["patch"].append(api_proxy.seen - started)
        firsts["exit"].append(ended - started)
    return {key: statistics.median(values) for key, values in firsts.items()}


def worker_environment(s3_port: int, api_port: int, name: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "crawljob-local",
        "AWS_SECRET_ACCESS_KEY": "crawljob-local-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "CRAWLJOB_OUTPUT": f"s3://bench/out/{name}/",
        "CRAWLJOB_NAME": name,
        "CRAWLJOB_NAMESPACE": NAMESPACE,
        "CRAWLJOB_KUBE_SERVER": f"http://127.0.0.1:{api_port}",
        "CRAWLJOB_TERMINATION_LOG": os.devnull,
        "CRAWLJOB_PROGRESS_INTERVAL": "5",
    }


def crawljob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{resource.GROUP}/{resource.VERSION}",
        "kind": resource.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"bucket": "bench", "key": "data.csv"},
    }


async def floor(code: str, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started, _ = await run_once([sys.executable, "-c", code], dict(os.environ))
        runs.append(time.monotonic() - started)
    return statistics.median(runs)


async def main_async(args: argparse.Namespace) -> None:
    rows = "\n".join(f"sensor-{i},{i % 40}.5,2026-01-01T00:00:{i % 60:02d}Z" for i in range(args.rows))
    with run_local_s3() as s3:
        storage: Any = boto3.client(
            "s3", endpoint_url=s3.endpoint, region_name="us-east-1",
            aws_access_key_id="crawljob-local", aws_secret_access_key="crawljob-local-secret",
        )  # fmt: skip
        storage.create_bucket(Bucket="bench")
        storage.put_object(Bucket="bench", Key="data.csv", Body=f"device,temp,time\n{rows}\n".encode())
        async with (
            serve_emulator() as (_, api_url),
            kube.KubeClient(kube.Connection(server=api_url)) as client,
        ):
            variants: list[tuple[str, Path]] = [("this tree", ROOT / "job-image")]
            if args.worker_tree:
                variants.insert(
                    0, (f"{args.worker_tree} (--worker-tree)", Path(args.worker_tree) / "job-image")
                )
            results = {
                label: await measure(label, path, args.repeat, s3.endpoint, api_url, client)
                for label, path in variants
            }
            imports = {label: start_imports(path, args.repeat) for label, path in variants}
            floors = {
                "python -c pass": await floor("pass", args.repeat),
                "python -c 'import pandas, pyarrow'": await floor("import pandas, pyarrow", args.repeat),
            }
    print(f"\nworker start-up, median of {args.repeat} runs, {args.rows} rows (seconds from exec)")
    print(
        f"{'run':<44} {'first S3 GET':>13} {'first PATCH':>12} {'exit':>8} {'start imports':>14} {'kubernetes':>11}"
    )
    for label, result in results.items():
        seconds, kubernetes = imports[label]
        print(
            f"{label:<44} {result['get']:>13.3f} {result['patch']:>12.3f} {result['exit']:>8.3f}"
            f" {seconds:>14.3f} {'imported' if kubernetes else 'no':>11}"
        )
    for label, seconds in floors.items():
        print(f"{label:<44} {'':>13} {'':>12} {seconds:>8.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per variant (the median is shown)")
    parser.add_argument("--rows", type=int, default=20000, help="rows of the generated CSV")
    parser.add_argument("--worker-tree", help="another checkout whose worker runs too (before/after)")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
