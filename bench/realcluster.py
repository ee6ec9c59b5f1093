"""The real control plane of `make test-cluster` (etcd on tmpfs + kube-apiserver + kube-controller-manager
1.20), for the benchmarks: a target only when it is already built (`make test-cluster` builds it)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import os
import shutil
import ssl
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import yaml

from crawljob import kube, resource

ROOT = Path(__file__).resolve().parent.parent
CRDS = kube.Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)
NAMESPACES = kube.Resource("", "v1", "namespaces", namespaced=False)


def _controlplane() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "crawljob_controlplane", ROOT / "tools/cluster/controlplane.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll *predicate* every 0.2 s until true; TimeoutError naming *what* otherwise."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


def built() -> bool:
    """Whether the control plane is built (cached by tools/cluster/build.sh) and etcd is installed."""
    cache = Path(os.environ.get("CRAWLJOB_CACHE_DIR") or Path.home() / ".cache" / "crawljob")
    return shutil.which("etcd") is not None and any(cache.glob("kubernetes-*/bin/kube-apiserver"))


@dataclass(frozen=True)
class RealCluster:
    kubeconfig: Path
    server: str
    token: str
    ca_file: Path

    def connection(self) -> kube.Connection:
        return kube.connection_from_kubeconfig(self.kubeconfig)

    async def namespace(self) -> str:
        """A fresh namespace (each run starts from an empty one), with its default ServiceAccount token."""
        name = f"bench-{uuid.uuid4().hex[:8]}"
        async with kube.KubeClient(self.connection()) as client:
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            await client.request("POST", NAMESPACES.path(), body)

            async def has_token() -> bool:
                try:
                    account = await client.get(kube.Resource("", "v1", "serviceaccounts"), name, "default")
                except kube.NotFound:
                    return False
                return bool(account.get("secrets"))

            await wait_for(has_token, 30, "the default ServiceAccount token")
        return name

    def write_count(self) -> int:
        """Writes (POST, PUT, PATCH, DELETE) the API server has answered so far (its own metrics)."""
        request = urllib.request.Request(
            self.server + "/metrics", headers={"Authorization": f"Bearer {self.token}"}
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        total = 0.0
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            for raw in response:
                line = raw.decode()
                if line.startswith("apiserver_request_total{") and any(
                    f'verb="{verb}"' in line for verb in ("POST", "PUT", "PATCH", "DELETE")
                ):
                    total += float(line.rsplit(" ", 1)[1])
        return int(total)


async def _install_crd(cluster: RealCluster) -> None:
    body = yaml.safe_load(resource.crd_path().read_text())
    async with kube.KubeClient(cluster.connection()) as client:
        await client.request("POST", CRDS.path(), body)

        async def served() -> bool:
            try:
                await client.list(kube.CRAWLJOBS, "default")
            except kube.NotFound:
                return False
            return True

        await wait_for(served, 60, "the crawljobs endpoint to be served")


@contextlib.contextmanager
def running() -> Iterator[RealCluster]:
    """Start the control plane in a scratch directory (etcd data on /dev/shm) with the CRD installed."""
    controlplane = _controlplane()
    with tempfile.TemporaryDirectory(prefix="crawljob-bench-cluster-") as scratch:
        plane = controlplane.start(Path(scratch))
        try:
            cluster = RealCluster(plane.kubeconfig, plane.server, plane.token, plane.ca_file)
            # In a thread of its own: callers may be inside an event loop (the operator bench is).
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, _install_crd(cluster)).result()
            yield cluster
        finally:
            controlplane.stop(plane.directory)
