"""A local S3 server (moto's server mode) in a child process on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# moto accepts any credentials; these make boto3 happy without touching the user's own.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "crawljob-local",
    "AWS_SECRET_ACCESS_KEY": "crawljob-local-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class LocalS3:
    """Where the local S3 listens and the environment a boto3 client needs to use it."""

    endpoint: str

    def environment(self) -> dict[str, str]:
        return {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL_S3": self.endpoint}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on *host*."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def run_local_s3(
    host: str = "127.0.0.1", port: int | None = None, timeout: float = 30.0
) -> Iterator[LocalS3]:
    """Start moto's S3 server as a child process; stop it on exit."""
    port = port or free_port(host)
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **LOCAL_CREDENTIALS},
    )
    endpoint = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto S3 server exited with code {process.returncode}")
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"moto S3 server did not start on {endpoint}") from None
                time.sleep(0.1)
        yield LocalS3(endpoint=endpoint)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
