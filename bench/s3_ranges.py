"""`make bench-s3-ranges`: one GET stream against parallel ranged GETs, when each connection is slow.

On S3 one GET stream gives roughly 50-100 MB/s, less than the worker converts on two cores, and the
loopback moto server gives ~4 GB/s, so the loopback benchmark cannot show what `--s3-connections`
buys. Here every connection to moto goes through a proxy that caps it at THROTTLE MB/s (token bucket,
response direction), and the worker reads the same generated CSV (SIZE_MB, 100 by default) with 1, 2,
4 and 8 connections. moto reads the whole object for every request, ranged or not (~0.55 s of its
CPU per GB), which the ranged runs pay once per range on these 2 cores; S3 does not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlparse

from worker import (  # bench/worker.py: this script's directory is on sys.path
    MB,
    generate,
    loopback_s3,
    measure,
)


class ThrottlingProxy:
    """Forwards TCP to *upstream*, each connection's responses capped at *rate* bytes per second."""

    def __init__(self, upstream: tuple[str, int], rate: float) -> None:
        self.upstream = upstream
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with suppress(OSError), client, socket.create_connection(self.upstream) as server:
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            started, sent = time.monotonic(), 0
            while data := server.recv(256 * 1024):
                client.sendall(data)
                sent += len(data)
                ahead = sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    @staticmethod
    def _pump(client: socket.socket, server: socket.socket) -> None:
        with suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        with suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@contextlib.contextmanager
def throttled(environment: dict[str, str], rate: float) -> Iterator[dict[str, str]]:
    endpoint = urlparse(environment["AWS_ENDPOINT_URL_S3"])
    proxy = ThrottlingProxy((endpoint.hostname or "127.0.0.1", endpoint.port or 80), rate)
    try:
        yield {**environment, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy.port}"}
    finally:
        proxy.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=int(os.environ.get("SIZE_MB", "100")))
    parser.add_argument("--throttle", type=float, default=float(os.environ.get("THROTTLE", "20")),
                        help="MB/s per connection")  # fmt: skip
    parser.add_argument("--connections", default="1,2,4,8")
    parser.add_argument("--range-mb", default="8")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="crawljob-bench-ranges-"))
    source = workdir / "iot.csv"
    size = generate(source, args.size_mb)
    rows = []
    with loopback_s3(source) as environment, throttled(environment, args.throttle * MB) as slow:
        for connections in [int(item) for item in args.connections.split(",")]:
            command = [sys.executable, "-m", "crawljob_worker", "s3://bench/iot.csv",
                       "--output", str(workdir / f"out-{connections}"), "--termination-log", str(workdir / "t"),
                       "--s3-connections", str(connections), "--s3-range-mb", args.range_mb]  # fmt: skip
            result = measure(f"{connections}", command, env=slow)
            rows.append((connections, result))
    shutil.rmtree(workdir, ignore_errors=True)
    base = rows[0][1].seconds
    print(f"\n{size / MB:,.0f} MB CSV from moto through a proxy capping each connection at "
          f"{args.throttle:g} MB/s; ranges of {args.range_mb} MiB")  # fmt: skip
    print("| S3 connections | wall s | MB/s | CPU s | peak RSS MB | time ÷ one stream |")
    print("|---:|---:|---:|---:|---:|---:|")
    for connections, result in rows:
        note = f" {result.note}" if result.note else ""
        print(f"| {connections}{note} | {result.seconds:.1f} | {size / MB / result.seconds:,.0f} | "
              f"{result.cpu_seconds:.1f} | {result.peak_rss_mb:,.0f} | {result.seconds / base:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
