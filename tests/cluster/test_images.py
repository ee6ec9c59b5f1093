"""The built images as real Pods: the chart's operator makes Jobs, the real Job controller makes Pods,
the local kubelet runs the worker image in them with podman (numeric user, read-only root, memory
limit, termination-message file, ServiceAccount token). Skipped, with the reason, when podman or
the images are missing (`make images` builds them; CI runs `make image-test` first)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crawljob import kube
from crawljob.local.s3 import free_port

from .conftest import ROOT, Child, Cluster, requires_modules, wait_http
from .test_helm import (
    SECRETS,
    deployments_by_component,
    helm_install,
    operator_identity_and_env,
    s3_secret_values,
)
from .test_jobs import job_pods
from .test_pipeline import OPERATOR, RECEIVER, ROWS, crawljob_for, post_json, s3_event, upload_csv, wait_phase

__all__ = ["helm_install"]  # a fixture, imported for its registration

VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "pyproject.toml").read_text().splitlines()
    if line.startswith("version")
)
WORKER_IMAGE = f"localhost/crawljob-worker:{VERSION}"
OPERATOR_IMAGE = f"localhost/crawljob-operator:{VERSION}"


def _built(image: str) -> bool:
    if shutil.which("podman") is None:
        return False
    return (
        subprocess.run(["podman", "image", "exists", image], capture_output=True, check=False).returncode == 0
    )


def _missing_images() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (make images installs it)"
    for image in (WORKER_IMAGE,):
        if not _built(image):
            return f"image {image} is not built: run `make images` (CI's `make image-test` builds it)"
    return None


MISSING = _missing_images()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture
def podman_kubelet(cluster: Cluster, namespace: str, children: Callable[..., Child], tmp_path: Path) -> Child:
    """The local kubelet for the test's namespace with the podman runtime (started)."""
    return children(
        "kubelet",
        [sys.executable, "-m", "crawljob.local.kubelet", "--namespace", namespace, "--runtime", "podman",
         "--workdir", str(tmp_path / "pods")],
        cluster.env(),
    ).start()  # fmt: skip


async def _chart_operator(
    helm_install: Callable[..., dict[str, Any]],
    kubectl: Callable[..., str],
    client: kube.KubeClient,
    cluster: Cluster,
    namespace: str,
    operator: Callable[..., Child],
    local_s3: Any,
    tmp_path: Path,
) -> dict[str, str]:
    """Install the chart (worker image: the built one; S3 credentials from a Secret) and start its
    operator with the chart's environment and its ServiceAccount's token; the chart's env."""
    helm_install(
        *await s3_secret_values(client, namespace, local_s3),
        "--set", "worker.image.repository=localhost/crawljob-worker",
        "--set", f"worker.image.tag={VERSION}",
    )  # fmt: skip
    pod_spec = deployments_by_component(kubectl)["operator"]["spec"]["template"]["spec"]
    kubeconfig, chart_env = await operator_identity_and_env(client, cluster, namespace, pod_spec, tmp_path)
    assert chart_env["CRAWLJOB_WORKER_IMAGE"] == WORKER_IMAGE
    operator(KUBECONFIG=str(kubeconfig), **chart_env)
    return chart_env


@requires_modules(RECEIVER, OPERATOR)
async def test_event_to_result_with_the_worker_image_as_a_pod(
    helm_install: Callable[..., dict[str, Any]],
    kubectl: Callable[..., str],
    client: kube.KubeClient,
    cluster: Cluster,
    namespace: str,
    operator: Callable[..., Child],
    receiver: str,
    podman_kubelet: Child,
    s3_client: Any,
    local_s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    chart_env = await _chart_operator(
        helm_install, kubectl, client, cluster, namespace, operator, local_s3, tmp_path
    )
    etag = upload_csv(s3_client, bucket, "images/readings.csv")
    status, _ = post_json(receiver + "/v1/trigger", s3_event(bucket, "images/readings.csv", etag))
    assert status == 202
    name, _ = crawljob_for(bucket, "images/readings.csv", etag, namespace)

    done = await wait_phase(client, namespace, name, "Succeeded", timeout=240)
    result = done["status"]["result"]
    assert result["rowsRead"] == ROWS and result["rowsWritten"] == ROWS
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=result["outputUri"].split("/", 3)[3])
    assert listed.get("KeyCount", 0) >= 1  # the container wrote to S3 over the host network
    [pod] = await job_pods(client, namespace, name)
    container = pod["spec"]["containers"][0]
    assert container["image"] == WORKER_IMAGE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["serviceAccountName"] == chart_env["CRAWLJOB_WORKER_SERVICE_ACCOUNT"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert '"outcome": "Succeeded"' in terminated["message"].replace('":"', '": "')
    # The worker reported progress itself, through its ServiceAccount token and in-cluster config.
    assert done["status"].get("progress", {}).get("rowsRead") == ROWS
    assert f"running image {WORKER_IMAGE}" in podman_kubelet.log_text()


@requires_modules(OPERATOR)
async def test_a_worker_far_over_its_memory_limit_is_oom_killed_and_the_crawljob_fails_once(
    helm_install: Callable[..., dict[str, Any]],
    kubectl: Callable[..., str],
    client: kube.KubeClient,
    cluster: Cluster,
    namespace: str,
    operator: Callable[..., Child],
    podman_kubelet: Child,
    s3_client: Any,
    local_s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    stray = Path("oom")  # what conmon leaves in its working directory after an OOM kill
    had_stray = await asyncio.to_thread(stray.exists)
    await _chart_operator(helm_install, kubectl, client, cluster, namespace, operator, local_s3, tmp_path)
    etag = upload_csv(s3_client, bucket, "images/too-big.csv")
    name, body = crawljob_for(bucket, "images/too-big.csv", etag, namespace)
    body["spec"]["backoffLimit"] = 1  # type: ignore[index]
    body["spec"]["jobTemplate"] = {"resources": {"limits": {"memory": "24Mi"}}}  # type: ignore[index]
    await client.create(kube.CRAWLJOBS, namespace, body)

    failed = await wait_phase(client, namespace, name, "Failed", timeout=240)
    status = failed["status"]
    assert status["reason"] == "OOMKilled"
    assert "ran out of memory" in status["message"]
    assert "raise spec.jobTemplate.resources.limits.memory" in status["message"]
    pods = await job_pods(client, namespace, name)
    assert len(pods) == 2  # the first try and the one retry backoffLimit 1 allows
    for pod in pods:
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")
    # No retry storm: one Job, no new Pod and no new Job while the operator keeps resyncing.
    await asyncio.sleep(8)
    assert len(await job_pods(client, namespace, name)) == 2
    jobs = await client.list(kube.JOBS, namespace)
    assert [job["metadata"]["name"] for job in jobs] == [name]
    assert (await client.get(kube.CRAWLJOBS, namespace, name))["status"]["phase"] == "Failed"
    assert had_stray or not await asyncio.to_thread(stray.exists), (
        "conmon's oom file landed in the kubelet's working directory"
    )


def post_with_token(url: str, body: dict[str, Any], token: str) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def _pod_from_deployment(deployment: dict[str, Any]) -> dict[str, Any]:
    """One Pod from a Deployment's template, as its ReplicaSet would make it (this tier has none)."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": deployment["metadata"]["name"] + "-local",
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }


@pytest.mark.skipif(
    not _built(OPERATOR_IMAGE), reason=f"image {OPERATOR_IMAGE} is not built: run `make images`"
)
@requires_modules(RECEIVER, OPERATOR)
async def test_the_charts_receiver_and_operator_images_run_as_pods_and_complete_a_crawl(
    helm_install: Callable[..., dict[str, Any]],
    kubectl: Callable[..., str],
    client: kube.KubeClient,
    cluster: Cluster,
    namespace: str,
    children: Callable[..., Child],
    s3_client: Any,
    local_s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    s3_values = await s3_secret_values(client, namespace, local_s3)
    # The host network: no fixed ports.
    receiver_port, metrics_port, health_port = free_port(), free_port(), free_port()
    helm_install(
        *s3_values,
        "--set", "image.repository=localhost/crawljob-operator", "--set", f"image.tag={VERSION}",
        "--set", "worker.image.repository=localhost/crawljob-worker", "--set", f"worker.image.tag={VERSION}",
        "--set", f"receiver.port={receiver_port}", "--set", f"operator.healthPort={health_port}",
        "--set", f"receiver.metricsPort={metrics_port}",
    )  # fmt: skip
    deployments = deployments_by_component(kubectl)
    kubelet = children(
        "kubelet",
        [sys.executable, "-m", "crawljob.local.kubelet", "--namespace", namespace, "--runtime", "podman",
         "--all-pods", "--workdir", str(tmp_path / "pods")],
        cluster.env(),
    ).start()  # fmt: skip
    for component in ("operator", "receiver"):
        await client.create(kube.PODS, namespace, _pod_from_deployment(deployments[component]))
    wait_http(f"http://127.0.0.1:{health_port}/healthz", kubelet, timeout=120)
    wait_http(f"http://127.0.0.1:{receiver_port}/readyz", kubelet, timeout=120)

    # The webhook token the chart generated, from the Secret its receiver Pod mounts.
    receiver_spec = deployments["receiver"]["spec"]["template"]["spec"]
    [secret_name] = [v["secret"]["secretName"] for v in receiver_spec.get("volumes", []) if "secret" in v]
    token = base64.b64decode((await client.get(SECRETS, namespace, secret_name))["data"]["token"]).decode()
    etag = upload_csv(s3_client, bucket, "images/chart.csv")
    url = f"http://127.0.0.1:{receiver_port}/v1/trigger"
    assert post_with_token(url, s3_event(bucket, "images/chart.csv", etag), token) == 202
    name, _ = crawljob_for(bucket, "images/chart.csv", etag, namespace)
    done = await wait_phase(client, namespace, name, "Succeeded", timeout=240)
    assert done["status"]["result"]["rowsWritten"] == ROWS
    # The chart's receiver serves its metrics on their own port, not on the webhook's.
    status, text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200 and 'crawljob_receiver_events_total{format="s3",outcome="created"} 1.0' in text
    assert http_get(f"http://127.0.0.1:{receiver_port}/metrics")[0] == 404
    running = {pod["metadata"]["name"]: pod for pod in await client.list(kube.PODS, namespace)}
    for component in ("operator", "receiver"):
        pod = running[deployments[component]["metadata"]["name"] + "-local"]
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["containers"][0]["image"] == OPERATOR_IMAGE
    log = kubelet.log_text()
    assert f"running image {OPERATOR_IMAGE}" in log and f"running image {WORKER_IMAGE}" in log


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
