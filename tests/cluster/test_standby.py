"""Active/standby (kopf peering) on the real control plane.

The chart's KopfPeering CRD installed into kube-apiserver 1.20, two `crawljob operator` processes
sharing one KopfPeering object, the real Job controller and the local kubelet. Who wrote what is
read from the server's own records: `metadata.managedFields[].manager`, which the API server takes
from the User-Agent (`crawljob-operator (<identity>)`).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from crawljob import kube, resource
from crawljob.local.s3 import free_port
from fakes.waiting import wait_for

from .conftest import BIN, CRDS, ROOT, Child, Cluster, wait_http
from .test_helm import helm_install, operator_identity_and_env  # noqa: F401 (helm_install: a fixture)
from .test_pipeline import crawljob_for, wait_phase

FAKE_WORKER = ROOT / "tests" / "fakes" / "worker.py"
PEERING = "crawljob-operator"


def peering_crd() -> dict[str, Any]:
    """kopfpeerings.kopf.dev exactly as the chart renders it with operator.ha.enabled."""
    rendered = subprocess.run(
        [str(BIN / "helm"), "template", "crawljob", str(ROOT / "charts" / "crawljob"),
         "--show-only", "templates/kopfpeering-crd.yaml", "--set", "operator.ha.enabled=true"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    crd: dict[str, Any] = yaml.safe_load(rendered.stdout)
    return crd


async def install_peering_crd(client: kube.KubeClient, namespace: str) -> None:
    crd = peering_crd()
    with contextlib.suppress(kube.Conflict):  # installed by an earlier test of the session
        await client.request("POST", CRDS.path(), crd)

    async def served() -> bool:
        try:
            await client.list(kube.PEERINGS, namespace)
        except kube.NotFound:
            return False
        return True

    await wait_for(served, timeout=30, what="the kopfpeerings endpoint to be served")


def managers(body: dict[str, Any]) -> set[str]:
    return {str(entry.get("manager")) for entry in body["metadata"].get("managedFields") or []}


async def test_only_the_active_replica_writes_and_the_standby_takes_over_after_a_crash(
    cluster: Cluster,
    client: kube.KubeClient,
    namespace: str,
    children: Callable[..., Child],
    kubelet: Child,
) -> None:
    await install_peering_crd(client, namespace)

    def replica(identity: str, priority: int) -> Child:
        port = free_port()
        env = cluster.env(
            CRAWLJOB_NAMESPACE=namespace,
            CRAWLJOB_HEALTH_PORT=str(port),
            CRAWLJOB_LOG_FORMAT="text",
            CRAWLJOB_MAX_ACTIVE="2",
            CRAWLJOB_RESYNC_SECONDS="2",
            CRAWLJOB_WORKER_COMMAND=json.dumps([sys.executable, str(FAKE_WORKER)]),
            CRAWLJOB_PEERING=PEERING,
            CRAWLJOB_PRIORITY=str(priority),
            CRAWLJOB_PEERING_IDENTITY=identity,
            CRAWLJOB_PEERING_LIFETIME="4",
        )
        child = children(f"operator-{identity}", [str(BIN / "crawljob"), "operator"], env).start()
        wait_http(f"http://127.0.0.1:{port}/readyz", child, timeout=60)
        return child

    async def peers() -> dict[str, Any]:
        try:
            body = await client.get(kube.PEERINGS, namespace, PEERING)
        except kube.NotFound:
            return {}
        return dict(body.get("status") or {})

    async def succeeded(count: int) -> bool:
        items = await client.list(kube.CRAWLJOBS, namespace)
        return sum(bool((item.get("status") or {}).get("phase") == "Succeeded") for item in items) >= count

    kubelet.start()
    high = replica("op-high", 1)
    low = replica("op-low", 0)

    async def both_alive() -> bool:
        return {"op-high", "op-low"} <= set(await peers())

    await wait_for(both_alive, timeout=30, what="both keep-alives in the KopfPeering")
    bodies = [
        resource.crawljob_manifest(resource.ObjectRef(bucket="b", key=f"ha/c{index}_sleep-1_ok-{index + 1}.csv"),
                                   namespace)
        for index in range(6)
    ]  # fmt: skip
    names = [str(body["metadata"]["name"]) for body in bodies]  # type: ignore[index]
    for body in bodies:
        await client.create(kube.CRAWLJOBS, namespace, body)
    await wait_for(lambda: succeeded(2), timeout=90, what="2 CrawlJobs Succeeded")

    # So far only op-high wrote Jobs and statuses (as the API server recorded it).
    writers = set()
    for item in await client.list(kube.JOBS, namespace) + await client.list(kube.CRAWLJOBS, namespace):
        writers |= managers(item)
    assert "crawljob-operator (op-high)" in writers, writers
    assert "crawljob-operator (op-low)" not in writers, writers

    high.stop(signal.SIGKILL)
    done = [await wait_phase(client, namespace, name, "Succeeded", timeout=90) for name in names]
    assert [item["status"]["result"]["rowsRead"] for item in done] == list(range(1, 7))
    jobs = await client.list(kube.JOBS, namespace)
    assert sorted(job["metadata"]["name"] for job in jobs) == sorted(names)  # one Job per CrawlJob
    job_creators = {job["metadata"]["name"]: managers(job) for job in jobs}
    assert any("crawljob-operator (op-low)" in who for who in job_creators.values()), job_creators

    # op-low's kopf removes the dead peer's entry (a merge patch with null, on the real server).
    async def high_cleaned() -> bool:
        return "op-high" not in await peers() and "op-low" in await peers()

    await wait_for(high_cleaned, timeout=30, what="op-high's expired keep-alive cleaned up")
    assert low.process is not None and low.process.poll() is None
    low.stop()
    assert "op-low" not in await peers()  # a graceful exit removes its own keep-alive


async def test_the_charts_ha_mode_installs_and_its_rbac_lets_the_operator_peer_and_act(
    helm_install: Callable[..., dict[str, Any]],  # noqa: F811 (the fixture imported above)
    kubectl: Callable[..., str],
    client: kube.KubeClient,
    cluster: Cluster,
    namespace: str,
    operator: Callable[..., Child],
    tmp_path: Path,
) -> None:
    """helm install with operator.ha.enabled into 1.20; the operator, as pod 0 of the StatefulSet
    with the chart's environment and its ServiceAccount's token, peers and creates a Job: the
    Role's kopfpeerings rule covers kopf's and the gate's calls under the real authorizer."""
    try:
        await client.get(CRDS, "", "kopfpeerings.kopf.dev")
        existing = ["--set", "operator.ha.createPeeringCRD=false"]  # installed by another test
    except kube.NotFound:
        existing = []
    assert helm_install("--set", "operator.ha.enabled=true", *existing)["info"]["status"] == "deployed"
    await install_peering_crd(client, namespace)  # established (a no-op when the chart made it)
    statefulset = json.loads(kubectl("get", "statefulsets", "-o", "json"))["items"]
    [operator_set] = [item for item in statefulset if item["metadata"]["name"].endswith("operator")]
    assert operator_set["spec"]["replicas"] == 2
    assert not [d for d in json.loads(kubectl("get", "deployments", "-o", "json"))["items"]
                if d["metadata"]["name"].endswith("operator")]  # fmt: skip
    pod_spec = operator_set["spec"]["template"]["spec"]
    kubeconfig, chart_env = await operator_identity_and_env(client, cluster, namespace, pod_spec, tmp_path)
    pod_name = f"{operator_set['metadata']['name']}-0"  # what the fieldRef metadata.name gives pod 0
    assert chart_env["CRAWLJOB_PRIORITY"] == "ordinal"
    operator(KUBECONFIG=str(kubeconfig), CRAWLJOB_PEERING_IDENTITY=pod_name, **chart_env)

    peering_name = chart_env["CRAWLJOB_PEERING"]

    async def keepalive() -> Any:
        try:
            body = await client.get(kube.PEERINGS, namespace, peering_name)
        except kube.NotFound:
            return None
        return (body.get("status") or {}).get(pod_name)

    entry = await wait_for(keepalive, timeout=30, what="pod 0's keep-alive in the KopfPeering")
    assert entry["priority"] == 0
    name, body = crawljob_for("landing", "ha/chart.csv", "h1", namespace)
    await client.create(kube.CRAWLJOBS, namespace, body)

    async def job_made() -> Any:
        try:
            return await client.get(kube.JOBS, namespace, name)
        except kube.NotFound:
            return None

    job = await wait_for(job_made, timeout=60, what="the active operator to create the Job")
    assert f"crawljob-operator ({pod_name})" in managers(job)
