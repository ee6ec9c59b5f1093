"""Fixtures of the real-control-plane tier (`make test-cluster`).

One session starts etcd + kube-apiserver 1.20 + kube-controller-manager (Job controller, garbage
collector) on loopback (tools/cluster/controlplane.py), writes a kubeconfig and installs the CRDs
from charts/crawljob/crds/. Each test gets its own namespace; a local kubelet runs the Pods the
real Job controller creates. The tier is collected only with CRAWLJOB_TEST_CLUSTER=1 (the make
target sets it), so the default `make test` stays fast and needs no build.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from crawljob import kube, resource, sources
from crawljob.local.s3 import free_port
from fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "cluster"
BIN = Path(sys.executable).parent
CRDS = kube.Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)
NAMESPACES = kube.Resource("", "v1", "namespaces", namespaced=False)

if os.environ.get("CRAWLJOB_TEST_CLUSTER") != "1":
    collect_ignore_glob = ["test_*.py"]


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


def requires_modules(*modules: str) -> pytest.MarkDecorator:
    """Skip, naming every missing module, until the parts that provide them are merged."""
    missing = [module for module in modules if _missing(module)]
    return pytest.mark.skipif(bool(missing), reason=f"not merged yet: {', '.join(missing)}")


def load_controlplane() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crawljob_controlplane", TOOLS / "controlplane.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Cluster:
    """The running control plane as the tests see it."""

    server: str
    kubeconfig: Path
    directory: Path

    def connection(self) -> kube.Connection:
        return kube.connection_from_kubeconfig(self.kubeconfig)

    def env(self, **extra: str) -> dict[str, str]:
        """A child-process environment pointing at this cluster (and at the venv's commands)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CRAWLJOB_", "KUBE"))}
        return {
            **base,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.directory / "kubectl-cache"),
            **extra,
        }


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The control plane for the whole session (built from Debian's sources on first use)."""
    controlplane = load_controlplane()
    directory = Path(os.environ.get("CRAWLJOB_CLUSTER_DIR") or tmp_path_factory.mktemp("cluster"))
    try:
        plane = controlplane.start(directory)
    except controlplane.ControlPlaneError as error:
        pytest.fail(f"the Kubernetes control plane did not start: {error}", pytrace=False)
    try:
        running = Cluster(server=plane.server, kubeconfig=plane.kubeconfig, directory=plane.directory)
        asyncio.run(_install_crd(running))
        yield running
    finally:
        controlplane.stop(plane.directory)


async def _install_crd(cluster: Cluster) -> None:
    async with kube.KubeClient(cluster.connection()) as client:
        sources_crd = yaml.safe_load(sources.crd_path().read_text())
        await client.request("POST", CRDS.path(), sources_crd)
        body = yaml.safe_load(resource.crd_path().read_text())
        await client.request("POST", CRDS.path(), body)

        async def established() -> bool:
            crd = await client.get(CRDS, "", body["metadata"]["name"])
            conditions = (crd.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        await wait_for(established, timeout=30, what="the CrawlJob CRD to be established")

        async def served() -> bool:
            try:
                await client.list(kube.CRAWLJOBS, "default")
            except kube.NotFound:
                return False
            return True

        await wait_for(served, timeout=30, what="the crawljobs endpoint to be served")

        # `kubectl explain` reads the published OpenAPI document, which the server updates
        # a few seconds after the CRD is established.
        async def published() -> bool:
            document = await client.request("GET", "/openapi/v2", timeout=30)
            definitions = document.get("definitions") or {}
            return {"io.crawljob.v1alpha1.CrawlJob", "io.crawljob.v1alpha1.CrawlSource"} <= set(definitions)

        await wait_for(published, timeout=60, interval=0.5, what="the CRD's OpenAPI schema to be published")


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[kube.KubeClient]:
    """An API client of the real API server (admin token, verified TLS)."""
    async with kube.KubeClient(cluster.connection()) as api:
        yield api


@pytest.fixture
async def namespace(client: kube.KubeClient) -> AsyncIterator[str]:
    """A fresh namespace per test, deleted afterwards (the namespace controller empties it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await client.request(
        "POST", NAMESPACES.path(), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )

    async def has_token() -> bool:
        try:
            account = await client.get(kube.Resource("", "v1", "serviceaccounts"), name, "default")
        except kube.NotFound:
            return False
        return bool(account.get("secrets"))

    # The ServiceAccount admission plugin refuses Pods until "default" has its token.
    await wait_for(has_token, timeout=30, what=f"the default ServiceAccount token in {name}")
    yield name
    await client.request("DELETE", NAMESPACES.path(None, name))


@pytest.fixture(scope="session")
def kubectl_binary() -> Path:
    found = shutil.which("kubectl", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail("kubectl not found: run `make tools` (make test-cluster does)", pytrace=False)
    return Path(found)


@pytest.fixture
def kubectl(cluster: Cluster, kubectl_binary: Path, namespace: str) -> Callable[..., str]:
    """Run kubectl against the cluster in the test's namespace; its stdout (fails on a non-zero exit)."""

    def run(*args: str, check: bool = True) -> str:
        result = subprocess.run(
            [str(kubectl_binary), "--namespace", namespace, *args],
            env=cluster.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout + (result.stderr if not check else "")

    return run


@dataclass
class Child:
    """A child process (kubelet, operator, receiver) with its log file; stop() is idempotent."""

    argv: Sequence[str]
    env: Mapping[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Child:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.argv), env=dict(self.env), stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_failed_key] = report.failed
    return report


_failed_key = pytest.StashKey[bool]()


@pytest.fixture
def children(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """A factory of child processes, all stopped at the end of the test (logs shown on failure)."""
    started: list[Child] = []

    def make(name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        child = Child(argv, env, tmp_path / f"{name}.log")
        started.append(child)
        return child

    yield make
    for child in reversed(started):
        child.stop()
    if request.node.stash.get(_failed_key, False):
        for child in {child.log: child for child in started}.values():  # restarts share a log
            print(f"\n----- {child.log.name} (last 4000 characters) -----\n{child.log_text()[-4000:]}")


@pytest.fixture(scope="session")
def api_proxy(cluster: Cluster, kubectl_binary: Path) -> Iterator[str]:
    """`kubectl proxy` on loopback: a plain-HTTP API URL for processes that take only a server URL
    (the worker's CRAWLJOB_KUBE_SERVER, used for progress patches), with the admin's credentials."""
    process = subprocess.Popen(
        [str(kubectl_binary), "proxy", "--address", "127.0.0.1", "--port", "0"],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "Starting to serve on 127.0.0.1:PORT"
    if "Starting to serve on" not in line:
        process.kill()
        pytest.fail(f"kubectl proxy did not start: {line}", pytrace=False)
    yield "http://" + line.rsplit(" ", 1)[-1].strip()
    process.terminate()
    process.wait(10)


@pytest.fixture
def kubelet(cluster: Cluster, namespace: str, children: Callable[..., Child], tmp_path: Path) -> Child:
    """The local kubelet for the test's namespace, not started: call .start() (tests may pause it)."""
    return children(
        "kubelet",
        [sys.executable, "-m", "crawljob.local.kubelet", "--namespace", namespace,
         "--workdir", str(tmp_path / "pods")],
        cluster.env(),
    )  # fmt: skip


def wait_http(url: str, child: Child, timeout: float = 30) -> None:
    """Wait until *url* answers 200, failing early (with the log) if the child exits."""
    deadline = time.monotonic() + timeout
    while True:
        assert child.process is not None
        if child.process.poll() is not None:
            raise AssertionError(
                f"{child.argv[:3]} exited with {child.process.returncode}:\n{child.log_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready after {timeout}s:\n{child.log_text()[-3000:]}")
        time.sleep(0.2)


def worker_env(s3: Any) -> str:
    """CRAWLJOB_WORKER_ENV for the operator: the local S3 endpoint and credentials as EnvVar objects."""
    return json.dumps([{"name": key, "value": value} for key, value in s3.environment().items()])


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, children: Callable[..., Child], local_s3: Any
) -> Callable[..., Child]:
    """A factory: the crawljob operator for the test's namespace as a child process (started)."""

    def start(**env: str) -> Child:
        port = free_port()
        child = children(
            "operator",
            [str(BIN / "crawljob"), "operator"],
            cluster.env(
                **{
                    "CRAWLJOB_NAMESPACE": namespace,
                    "CRAWLJOB_HEALTH_PORT": str(port),
                    "CRAWLJOB_WORKER_ENV": worker_env(local_s3),
                    "CRAWLJOB_LOG_FORMAT": "text",
                    **env,
                }
            ),
        ).start()
        wait_http(f"http://127.0.0.1:{port}/readyz", child, timeout=60)
        return child

    return start


@pytest.fixture
def start_receiver(cluster: Cluster, namespace: str, children: Callable[..., Child]) -> Callable[..., str]:
    """A factory: the crawljob receiver for the test's namespace (no webhook auth); its base URL.

    *env* overrides the environment, e.g. KUBECONFIG with a ServiceAccount's token.
    """

    def start(**env: str) -> str:
        port = free_port()
        child = children(
            "receiver",
            [str(BIN / "crawljob"), "receiver"],
            cluster.env(
                **{
                    "CRAWLJOB_HOST": "127.0.0.1",
                    "CRAWLJOB_PORT": str(port),
                    "CRAWLJOB_NAMESPACE": namespace,
                    "CRAWLJOB_AUTH_MODE": "none",
                    "CRAWLJOB_LOG_FORMAT": "text",
                    **env,
                }
            ),
        ).start()
        wait_http(f"http://127.0.0.1:{port}/readyz", child, timeout=60)
        return f"http://127.0.0.1:{port}"

    return start


@pytest.fixture
def receiver(start_receiver: Callable[..., str]) -> str:
    """The crawljob receiver for the test's namespace, with the admin kubeconfig; its base URL."""
    return start_receiver()


async def service_account_token(client: kube.KubeClient, namespace: str, account: str) -> str:
    """The token of a ServiceAccount (1.20 keeps it in a Secret the token controller makes)."""
    secrets = kube.Resource("", "v1", "secrets")
    accounts = kube.Resource("", "v1", "serviceaccounts")

    async def token_secret() -> str | None:
        refs = (await client.get(accounts, namespace, account)).get("secrets") or []
        return str(refs[0]["name"]) if refs else None

    secret_name = await wait_for(token_secret, timeout=30, what=f"the token of ServiceAccount {account}")
    secret = await client.get(secrets, namespace, secret_name)
    return base64.b64decode(secret["data"]["token"]).decode()


def token_kubeconfig(cluster: Cluster, token: str, namespace: str, path: Path) -> Path:
    """A copy of the cluster's kubeconfig that authenticates with *token* in *namespace*."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "token-user", "user": {"token": token}}]
    config["contexts"][0]["context"].update(user="token-user", namespace=namespace)
    path.write_text(json.dumps(config))
    return path
