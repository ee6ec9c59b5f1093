"""`helm install` of the chart into the real API server (1.20), and its RBAC under the real authorizer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crawljob import kube

from .conftest import ROOT, Child, Cluster, requires_modules, service_account_token, token_kubeconfig
from .test_jobs import job_pods
from .test_pipeline import (
    OPERATOR,
    RECEIVER,
    ROWS,
    WORKER,
    crawljob_for,
    post_json,
    s3_event,
    upload_csv,
    wait_phase,
)

CHART = ROOT / "charts" / "crawljob"
SECRETS = kube.Resource("", "v1", "secrets")

pytestmark = pytest.mark.skipif(
    not (CHART / "templates").is_dir(), reason="charts/crawljob/templates is not merged yet (the chart)"
)


def helm_binary() -> str:
    found = shutil.which(
        "helm", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if not found:
        pytest.fail("helm not found: run `make tools` (make test-cluster does)", pytrace=False)
    return found


@pytest.fixture
def helm_install(cluster: Cluster, namespace: str, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Install the chart as release "crawljob" into the test's namespace; `helm status` as JSON."""
    env = cluster.env(
        HELM_CACHE_HOME=str(tmp_path / "helm-cache"),
        HELM_CONFIG_HOME=str(tmp_path / "helm-config"),
        HELM_DATA_HOME=str(tmp_path / "helm-data"),
    )

    def install(*flags: str) -> dict[str, Any]:
        installed = subprocess.run(
            [
                helm_binary(),
                "install",
                "crawljob",
                str(CHART),
                "--namespace",
                namespace,
                "--timeout",
                "60s",
                *flags,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert installed.returncode == 0, installed.stderr
        status = subprocess.run(
            [helm_binary(), "status", "crawljob", "--namespace", namespace, "-o", "json"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(status.stdout)
        return result

    return install


def deployments_by_component(kubectl: Callable[..., str]) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", "deployments", "-o", "json"))["items"]
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        for component in ("receiver", "operator"):
            if component in item["metadata"]["name"]:
                found[component] = item
    return found


async def operator_identity_and_env(
    client: kube.KubeClient, cluster: Cluster, namespace: str, pod_spec: dict[str, Any], tmp_path: Path
) -> tuple[Path, dict[str, str]]:
    """A kubeconfig with the token of the chart's operator ServiceAccount, and the operator's
    environment as the chart renders it (plain values), for running it against this cluster."""
    token = await service_account_token(client, namespace, pod_spec["serviceAccountName"])
    kubeconfig = token_kubeconfig(cluster, token, namespace, tmp_path / "operator.kubeconfig")
    chart_env = {
        item["name"]: item["value"] for item in pod_spec["containers"][0].get("env", []) if "value" in item
    }
    chart_env.pop("CRAWLJOB_HEALTH_PORT", None)  # the fixture picks a free port
    chart_env.pop("CRAWLJOB_LOG_FORMAT", None)
    return kubeconfig, chart_env


def test_helm_install_is_accepted_with_receiver_and_operator_deployments(
    helm_install: Callable[..., dict[str, Any]], kubectl: Callable[..., str]
) -> None:
    assert helm_install()["info"]["status"] == "deployed"
    deployments = deployments_by_component(kubectl)
    assert set(deployments) == {"receiver", "operator"}
    for item in deployments.values():
        pod_spec = item["spec"]["template"]["spec"]
        assert pod_spec["containers"][0]["image"]
        assert pod_spec["serviceAccountName"]
    accounts = json.loads(kubectl("get", "serviceaccounts", "-o", "json"))["items"]
    names = {item["metadata"]["name"] for item in accounts}
    assert {item["spec"]["template"]["spec"]["serviceAccountName"] for item in deployments.values()} <= names


@requires_modules(RECEIVER)
async def test_receiver_with_the_charts_service_account_creates_crawljobs_and_nothing_more(
    helm_install: Callable[..., dict[str, Any]],
    kubectl: Callable[..., str],
    client: kube.KubeClient,
    cluster: Cluster,
    namespace: str,
    start_receiver: Callable[..., str],
    tmp_path: Path,
) -> None:
    helm_install()
    account = deployments_by_component(kubectl)["receiver"]["spec"]["template"]["spec"]["serviceAccountName"]
    token = await service_account_token(client, namespace, account)
    kubeconfig = token_kubeconfig(cluster, token, namespace, tmp_path / "receiver.kubeconfig")

    url = start_receiver(KUBECONFIG=str(kubeconfig))
    status, text = post_json(url + "/v1/trigger", s3_event("landing", "rbac/check.csv", "r1"))
    name, _ = crawljob_for("landing", "rbac/check.csv", "r1", namespace)
    assert status == 202 and name in text
    assert (await client.get(kube.CRAWLJOBS, namespace, name))["spec"]["source"]["key"] == "rbac/check.csv"

    # Least privilege, enforced by the real authorizer: the receiver's identity can't delete or read Jobs.
    async with kube.KubeClient(kube.connection_from_kubeconfig(kubeconfig)) as as_receiver:
        with pytest.raises(kube.KubeError) as refused:
            await as_receiver.delete(kube.CRAWLJOBS, namespace, name)
        assert refused.value.status == 403
        with pytest.raises(kube.KubeError) as refused:
            await as_receiver.list(kube.JOBS, namespace)
        assert refused.value.status == 403


async def s3_secret_values(client: kube.KubeClient, namespace: str, local_s3: Any) -> list[str]:
    """Static S3 credentials the way a user gives them to the chart: an existing Secret (made here),
    named in values; the `helm install` flags that say so."""
    credentials = local_s3.environment()
    await client.create(SECRETS, namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"},
        "stringData": {key: credentials[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    })  # fmt: skip
    return [
        "--set", f"s3.endpointUrl={local_s3.endpoint}",
        "--set", f"s3.region={credentials['AWS_DEFAULT_REGION']}",
        "--set", "s3.existingSecret=s3-credentials",
    ]  # fmt: skip


@requires_modules(OPERATOR, WORKER)
async def test_operator_configured_and_authorized_by_the_chart_completes_a_crawljob(
    helm_install: Callable[..., dict[str, Any]],
    kubectl: Callable[..., str],
    client: kube.KubeClient,
    cluster: Cluster,
    namespace: str,
    operator: Callable[..., Child],
    kubelet: Child,
    s3_client: Any,
    local_s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    helm_install(*await s3_secret_values(client, namespace, local_s3))
    pod_spec = deployments_by_component(kubectl)["operator"]["spec"]["template"]["spec"]
    kubeconfig, chart_env = await operator_identity_and_env(client, cluster, namespace, pod_spec, tmp_path)
    assert chart_env["CRAWLJOB_NAMESPACE"] == namespace

    kubelet.start()
    operator(KUBECONFIG=str(kubeconfig), **chart_env)
    etag = upload_csv(s3_client, bucket, "chart/rbac.csv")
    name, body = crawljob_for(bucket, "chart/rbac.csv", etag, namespace)
    await client.create(kube.CRAWLJOBS, namespace, body)

    done = await wait_phase(client, namespace, name, "Succeeded")
    assert done["status"]["result"]["rowsWritten"] == ROWS
    [pod] = await job_pods(client, namespace, name)
    assert pod["spec"]["serviceAccountName"] == chart_env["CRAWLJOB_WORKER_SERVICE_ACCOUNT"]
    # The credentials reached the worker only through the Secret reference the chart rendered.
    refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in pod["spec"]["containers"][0]["env"]
        if "valueFrom" in item
    }
    assert refs["AWS_ACCESS_KEY_ID"] == {"name": "s3-credentials", "key": "AWS_ACCESS_KEY_ID"}
    assert refs["AWS_SECRET_ACCESS_KEY"] == {"name": "s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
