"""Kubeconfigs resolved by kubernetes' own loader, against the emulator: exec plugins, renewal, errors.

The exec plugin is a tiny script printing an ExecCredential (the protocol of `aws eks get-token`,
`gke-gcloud-auth-plugin`, `kubelogin`); it numbers the tokens it hands out, so a test can tell a
renewed token from the first one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from crawljob import kube
from crawljob.local.emulator import Emulator

EVENTS = Path(__file__).parent.parent / "data" / "events"
PLUGIN = """#!{python}
import datetime, json, pathlib, sys
counter = pathlib.Path(__file__).with_name("issued")
issued = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(issued))
if {fail}:
    sys.exit("exec plugin: no credentials for you")
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds={lifetime})
print(json.dumps({{
    "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
    "status": {{"token": f"exec-token-{{issued}}", "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}},
}}))
"""


def write_kubeconfig(directory: Path, server: str, *, lifetime: int = 3600, fail: bool = False) -> Path:
    """A kubeconfig whose only user authenticates through the exec plugin script beside it."""
    plugin = directory / "credential-plugin"
    plugin.write_text(PLUGIN.format(python=sys.executable, lifetime=lifetime, fail=fail))
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "exec",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "exec-user", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
            "interactiveMode": "Never",
        }}}],
        "contexts": [{"name": "exec", "context": {"cluster": "emulator", "user": "exec-user", "namespace": "crawl"}}],
    }  # fmt: skip
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def bearer_tokens(emulator: Emulator, method: kmock.method) -> list[str]:
    return [str(request.headers.get("Authorization")) for request in emulator if request.method == method]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_crawljob_receiver_authenticates_with_the_exec_plugin_of_its_kubeconfig(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    emulator[0].trim_request_log = False
    kubeconfig = write_kubeconfig(tmp_path, emulator[1])
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawljob.cli", "receiver", "--host", "127.0.0.1", "--port", str(port),
        "--kubeconfig", str(kubeconfig), "--namespace", "crawl",
    )  # fmt: skip
    try:
        answer = await asyncio.to_thread(post_when_listening, port, (EVENTS / "minimal.json").read_bytes())
        assert answer["crawljobs"][0]["status"] == "created"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    assert len(await kube_client.list(kube.CRAWLJOBS, "crawl")) == 1
    assert bearer_tokens(emulator[0], kmock.method.POST) == ["Bearer exec-token-1"]


def post_when_listening(port: int, body: bytes, timeout: float = 30.0) -> Any:
    """POST the event once the receiver listens (connection refused until then)."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/trigger", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.URLError as error:
            if not isinstance(error.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


async def test_an_expiring_exec_token_is_renewed_before_the_next_request(
    emulator: tuple[Emulator, str], tmp_path: Path
) -> None:
    """Tokens expiring within kubernetes' 5-minute skew count as expired: every request renews."""
    emulator[0].trim_request_log = False
    connection = kube.connection_from_kubeconfig(write_kubeconfig(tmp_path, emulator[1], lifetime=60))
    assert connection.default_namespace == "crawl"
    async with kube.KubeClient(connection) as client:
        for _ in range(2):
            await client.list(kube.CRAWLJOBS, "crawl")
    tokens = bearer_tokens(emulator[0], kmock.method.GET)
    assert len(tokens) == 2 and len(set(tokens)) == 2, tokens
    assert all(token.startswith("Bearer exec-token-") for token in tokens)


async def test_a_long_lived_exec_token_is_asked_for_once(
    emulator: tuple[Emulator, str], tmp_path: Path
) -> None:
    emulator[0].trim_request_log = False
    connection = kube.connection_from_kubeconfig(write_kubeconfig(tmp_path, emulator[1], lifetime=3600))
    async with kube.KubeClient(connection) as client:
        for _ in range(3):
            await client.list(kube.CRAWLJOBS, "crawl")
    assert bearer_tokens(emulator[0], kmock.method.GET) == ["Bearer exec-token-1"] * 3
    assert (tmp_path / "issued").read_text() == "1"


def test_a_failing_exec_plugin_is_a_clear_error(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path, "https://127.0.0.1:6443", fail=True)
    with pytest.raises(ValueError, match="context 'exec' gives no credentials"):
        kube.connection_from_kubeconfig(kubeconfig)


def test_an_unknown_context_is_named(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path, "https://127.0.0.1:6443")
    with pytest.raises(ValueError, match="no context 'prod'"):
        kube.connection_from_kubeconfig(kubeconfig, context_name="prod")


def test_a_kubeconfig_without_contexts_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    with pytest.raises(ValueError, match=str(path)):
        kube.connection_from_kubeconfig(path)


def test_basic_auth_users_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "old",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"username": "admin", "password": "secret"}}],
        "contexts": [{"name": "old", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    with pytest.raises(ValueError, match="only bearer tokens and client certificates"):
        kube.connection_from_kubeconfig(path)


def service_account(directory: Path, token: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_text("")
    (directory / "namespace").write_text("crawljob\n")
    return directory


def test_in_cluster_the_rotated_token_is_read_again_after_the_period(tmp_path: Path) -> None:
    directory = service_account(tmp_path / "sa", "first")
    rereading = kube.connection_in_cluster(directory, "10.0.0.1", "443", reread_seconds=0)
    keeping = kube.connection_in_cluster(directory, "10.0.0.1", "443", reread_seconds=3600)
    assert (rereading.bearer(), keeping.bearer(), keeping.default_namespace) == ("first", "first", "crawljob")
    (directory / "token").write_text("second")  # the kubelet rotated it
    assert (rereading.bearer(), keeping.bearer()) == ("second", "first")


def test_in_cluster_a_vanished_token_file_keeps_the_last_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = service_account(tmp_path / "sa", "first")
    connection = kube.connection_in_cluster(directory, "10.0.0.1", "443", reread_seconds=0)
    (directory / "token").unlink()
    assert connection.bearer() == "first"
    assert "cannot re-read the service-account token" in caplog.text
