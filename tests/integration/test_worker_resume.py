"""Resume: a TCP proxy in front of moto cuts the source download at random offsets; the worker
reconnects with Range GETs and the output equals that of a clean run, row for row."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import struct
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest

from crawljob_worker.__main__ import main


class CuttingProxy:
    """Forwards TCP to *upstream*; each connection is reset after a random number of response bytes."""

    def __init__(
        self, upstream: tuple[str, int], low: int, high: int, seed: int, reset: bool = False
    ) -> None:
        self.upstream = upstream
        self.reset = reset
        self.low, self.high = low, high
        self.random = random.Random(seed)
        self.cuts = 0
        self.open = 0  # connections open now, and the most open at once
        self.peak = 0
        self.counting = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            budget = self.random.randint(self.low, self.high)
            threading.Thread(target=self._serve, args=(client, budget), daemon=True).start()

    def _serve(self, client: socket.socket, budget: int) -> None:
        with self.counting:
            self.open += 1
            self.peak = max(self.peak, self.open)
        try:
            self._forward(client, budget)
        finally:
            with self.counting:
                self.open -= 1

    def _forward(self, client: socket.socket, budget: int) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pump_requests, args=(client, server), daemon=True).start()
        sent = 0
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                if sent + len(data) >= budget:
                    client.sendall(data[: budget - sent])
                    self.cuts += 1
                    # A FIN mid-body: the reader gets every byte up to the cut, then a short body. (An RST
                    # would also discard what sits unread in the receive buffer, so where the cut
                    # lands would depend on timing.) shutdown also wakes the request pump.
                    if self.reset:
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.shutdown(socket.SHUT_RDWR)
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    @staticmethod
    def _pump_requests(client: socket.socket, server: socket.socket) -> None:
        with suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        with suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


def convert(tmp_path: Path, name: str, source: str, *flags: str) -> tuple[dict[str, Any], str, int]:
    """Run the worker to a local dir; the termination message, a content checksum, the resumes."""
    out = tmp_path / name
    termination = tmp_path / f"{name}.termination"
    code = main(
        [source, "--output", str(out), "--termination-log", str(termination), "--retries", "60", *flags]
    )
    message = json.loads(termination.read_text())
    assert code == 0, message
    manifest = json.loads((out / "_manifest.json").read_text())
    digest = hashlib.sha256()
    for part in manifest["parts"]:
        for row in pq.read_table(out / part["name"]).to_pylist():
            digest.update(json.dumps(row, default=str, sort_keys=True).encode())
    return message, digest.hexdigest(), int(manifest["resumes"])


# One GET stream; and ranged GETs of ~100 KB over 3 connections, each range resuming on its own
# (connections then carry less each, so they are cut sooner). Flags, and the cut's byte range.
READS = {
    "one-stream": ((), 300_000, 700_000),
    "ranged": (("--s3-connections", "3", "--s3-range-mb", "0.1"), 40_000, 250_000),
}


@pytest.mark.parametrize("read", list(READS))
def test_cut_connections_resume_to_the_same_output(
    tmp_path: Path,
    s3_client: Any,
    bucket: str,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    read: str,
) -> None:
    rows = [f'{n},device-{n % 17},{n * 0.25},"text {n}, with comma"' for n in range(30000)]
    body = ("id,device,value,text\n" + "\n".join(rows) + "\n").encode()
    s3_client.put_object(Bucket=bucket, Key="big.csv", Body=body)
    source = f"s3://{bucket}/big.csv"
    flags, low, high = READS[read]
    clean, clean_digest, clean_resumes = convert(tmp_path, "clean", source)
    assert (clean["rowsRead"], clean_resumes) == (30000, 0)
    endpoint = urlparse(s3_env["AWS_ENDPOINT_URL_S3"])
    total_resumes = 0
    for seed in (1, 2, 3):
        proxy = CuttingProxy((endpoint.hostname or "127.0.0.1", endpoint.port or 80), low, high, seed)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{proxy.port}")
        try:
            message, digest, resumes = convert(tmp_path, f"cut-{seed}", source, *flags)
        finally:
            proxy.close()
        assert proxy.peak >= (3 if read == "ranged" else 1)  # ranged reads: three GETs at once
        assert message["rowsRead"] == message["rowsWritten"] == 30000
        assert message["bytesRead"] == len(body)
        assert digest == clean_digest
        assert proxy.cuts >= 1
        total_resumes += resumes
    assert total_resumes >= 3


def test_shards_resume_cut_connections_to_the_output_of_one_clean_worker(
    tmp_path: Path,
    s3_client: Any,
    bucket: str,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each shard's ranged read resumes after a drop as a 1-shard run's does (issue 15, "Resume stays")."""
    rows = [f'{n},device-{n % 17},{n * 0.25},"text {n}, with comma"' for n in range(30000)]
    body = ("id,device,value,text\n" + "\n".join(rows) + "\n").encode()
    s3_client.put_object(Bucket=bucket, Key="sharded.csv", Body=body)
    source = f"s3://{bucket}/sharded.csv"
    _, clean_digest, _ = convert(tmp_path, "clean", source)
    endpoint = urlparse(s3_env["AWS_ENDPOINT_URL_S3"])
    proxy = CuttingProxy((endpoint.hostname or "127.0.0.1", endpoint.port or 80), 100_000, 250_000, seed=7)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{proxy.port}")
    try:
        for index in range(3):
            message, digest, resumes = convert_shard(tmp_path, "cut", source, index, 3)
    finally:
        proxy.close()
    assert message["shard"] == {"index": 2, "count": 3, "finalized": True}
    assert message["rowsRead"] == message["rowsWritten"] == 30000
    assert message["bytesRead"] >= len(body)  # each shard also reads its last record's tail
    assert digest == clean_digest
    assert proxy.cuts >= 3 and resumes >= 3  # every shard's read (~450 KB) was cut at least once


def convert_shard(
    tmp_path: Path, name: str, source: str, index: int, shards: int
) -> tuple[dict[str, Any], str, int]:
    """One shard of *source* into tmp_path/name; after the last one, what convert() returns."""
    out = tmp_path / name
    termination = tmp_path / f"{name}-{index}.termination"
    code = main([source, "--output", str(out), "--termination-log", str(termination), "--retries", "60",
                 "--shards", str(shards), "--shard-index", str(index), "--run-id", name])  # fmt: skip
    message = json.loads(termination.read_text())
    assert code == 0, message
    if not message["shard"]["finalized"]:
        return message, "", 0
    manifest = json.loads((out / "_manifest.json").read_text())
    digest = hashlib.sha256()
    for part in manifest["parts"]:
        for row in pq.read_table(part["uri"]).to_pylist():
            digest.update(json.dumps(row, default=str, sort_keys=True).encode())
    return message, digest.hexdigest(), int(manifest["resumes"])


def test_a_spent_retry_budget_exits_75_for_the_job_to_retry(
    tmp_path: Path, s3_client: Any, bucket: str, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_client.put_object(Bucket=bucket, Key="flaky.csv", Body=b"a,b\n" + b"1,2\n" * 400_000)
    endpoint = urlparse(s3_env["AWS_ENDPOINT_URL_S3"])
    proxy = CuttingProxy((endpoint.hostname or "127.0.0.1", endpoint.port or 80), 300_000, 400_000, seed=4)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{proxy.port}")
    termination = tmp_path / "termination"
    try:
        code = main([f"s3://{bucket}/flaky.csv", "--output", str(tmp_path / "out"),
                     "--termination-log", str(termination), "--retries", "1"])  # fmt: skip
    finally:
        proxy.close()
    message = json.loads(termination.read_text())
    assert (code, message["reason"], message["outcome"]) == (75, "Transient", "Failed")
    assert "retry budget" in message["message"]
    assert not (tmp_path / "out" / "_manifest.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_connection_resets_resume_to_the_same_output(
    tmp_path: Path,
    s3_client: Any,
    bucket: str,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
) -> None:
    """Harsher: the connection is reset (RST), which also drops whatever the reader had not yet taken
    from the socket, so the resume offset lands anywhere."""
    rows = [f'{n},"value {n}, with comma",{n * 3}' for n in range(50000)]
    s3_client.put_object(
        Bucket=bucket, Key="reset.csv", Body=("id,text,n\n" + "\n".join(rows) + "\n").encode()
    )
    source = f"s3://{bucket}/reset.csv"
    _, clean_digest, _ = convert(tmp_path, "clean", source)
    endpoint = urlparse(s3_env["AWS_ENDPOINT_URL_S3"])
    proxy = CuttingProxy(
        (endpoint.hostname or "127.0.0.1", endpoint.port or 80), 300_000, 1_500_000, seed, reset=True
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{proxy.port}")
    try:
        message, digest, _ = convert(tmp_path, "reset", source)
    finally:
        proxy.close()
    assert message["rowsRead"] == message["rowsWritten"] == 50000
    assert digest == clean_digest
