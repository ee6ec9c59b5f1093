"""`helm install` of the chart into the real API server (1.20): every manifest accepted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ROOT, Cluster

CHART = ROOT / "charts" / "crawljob"

pytestmark = pytest.mark.skipif(
    not (CHART / "Chart.yaml").exists(), reason="charts/crawljob/Chart.yaml is not merged yet (the chart)"
)


def helm_binary() -> str:
    found = shutil.which(
        "helm", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if not found:
        pytest.fail("helm not found: run tools/cluster/kube-tools.sh (make test-cluster does)", pytrace=False)
    return found


def test_helm_install_is_accepted_with_receiver_and_operator_deployments(
    cluster: Cluster, namespace: str, kubectl: Callable[..., str]
) -> None:
    env = cluster.env(HELM_CACHE_HOME=str(cluster.directory / "helm-cache"),
                      HELM_CONFIG_HOME=str(cluster.directory / "helm-config"),
                      HELM_DATA_HOME=str(cluster.directory / "helm-data"))  # fmt: skip
    installed = subprocess.run(
        [helm_binary(), "install", "crawljob", str(CHART), "--namespace", namespace, "--timeout", "60s"],
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
    assert json.loads(status.stdout)["info"]["status"] == "deployed"
    deployments = json.loads(kubectl("get", "deployments", "-o", "json"))["items"]
    names = [item["metadata"]["name"] for item in deployments]
    assert any("receiver" in name for name in names), names
    assert any("operator" in name for name in names), names
    for item in deployments:
        container = item["spec"]["template"]["spec"]["containers"][0]
        assert container["image"], item["metadata"]["name"]
