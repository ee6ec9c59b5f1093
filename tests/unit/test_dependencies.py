"""The declared dependencies: each extra is imported by the code it installs for, and the images' extras
keep apart (the worker image carries no kopf/aiohttp, the operator image no pandas/pyarrow; it carries
boto3 for CrawlSource sweeps, which list buckets)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Distribution name → the module it installs.
MODULES = {
    "boto3": "boto3", "pandas": "pandas", "pyarrow": "pyarrow", "kubernetes": "kubernetes",
    "aiohttp": "aiohttp", "kopf": "kopf", "prometheus-client": "prometheus_client",
    "cryptography": "cryptography", "kmock": "kmock", "moto": "moto", "pyyaml": "yaml",
    "cloudevents": "cloudevents",
}  # fmt: skip
WORKER = ROOT / "job-image" / "crawljob_worker"
OPERATOR = ROOT / "operator" / "crawljob"
# The code each group of requirements is installed for.
# The kubectl plugin: installed on client machines with the s3-read extra (boto3 for `submit`).
S3_READ = [OPERATOR / "plugin"]
USERS = {
    "dependencies": [WORKER, OPERATOR],
    "worker": [WORKER],
    "operator": [
        file
        for file in OPERATOR.rglob("*.py")
        if "local" not in file.relative_to(OPERATOR).parts[:1]
        and not any(file == path or path in file.parents for path in S3_READ)
    ],
    "s3-read": S3_READ,
    "local": [OPERATOR / "local"],
}


def names(requirements: list[str]) -> set[str]:
    """Distribution names of PEP 508 requirements, without the project's own `crawljob[...]`."""
    found = {re.split(r"[\[<>=;! ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}
    return found - {"crawljob"}


def requirements(group: str) -> set[str]:
    if group == "dependencies":
        return names(PROJECT["dependencies"])
    return names(PROJECT["optional-dependencies"][group])


def imported_modules(paths: list[Path]) -> set[str]:
    """Top-level modules imported anywhere (also inside functions) or run as `python -m X` under *paths*."""
    files = [file for path in paths for file in ([path] if path.is_file() else path.rglob("*.py"))]
    found: set[str] = set()
    for file in files:
        if file.suffix != ".py":
            continue
        text = file.read_text()
        found |= {module.split(".")[0] for module in re.findall(r'"-m",\s*"([\w.]+)"', text)}
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("group", sorted(USERS))
def test_every_requirement_is_imported_by_the_code_it_is_installed_for(group: str) -> None:
    used = imported_modules(USERS[group])
    for distribution in requirements(group):
        assert MODULES[distribution] in used, f"{distribution} ({group}) is imported nowhere in its code"


def test_the_worker_image_installs_no_operator_library() -> None:
    installed = requirements("dependencies") | requirements("worker")
    assert installed.isdisjoint({"kopf", "aiohttp", "prometheus-client", "kmock", "moto"}), installed


def test_the_operator_image_installs_no_worker_library() -> None:
    installed = requirements("dependencies") | requirements("operator")
    assert installed.isdisjoint({"pandas", "pyarrow", "kmock", "moto"}), installed


def test_each_image_code_imports_only_what_its_extra_installs() -> None:
    """The other half: code that imports a library its image does not install would fail there."""
    known = set(MODULES.values())
    worker_has = {MODULES[name] for name in requirements("dependencies") | requirements("worker")}
    operator_has = {MODULES[name] for name in requirements("dependencies") | requirements("operator")}
    # numpy and urllib3 come with pandas and boto3 (and kubernetes); attrs, yarl with aiohttp.
    assert (imported_modules(USERS["worker"]) & known) <= worker_has
    assert (imported_modules(USERS["operator"]) & known) <= operator_has


def installed_modules(extra: str) -> set[str]:
    """Top-level modules the extra installs (with the base dependencies and the extras it names)."""
    found: set[str] = set()
    for requirement in [*PROJECT["dependencies"], *PROJECT["optional-dependencies"][extra]]:
        nested = re.match(r"crawljob\[([^\]]+)\]", requirement)
        if nested:
            for other in nested.group(1).split(","):
                found |= installed_modules(other.strip())
            continue
        module = MODULES[next(iter(names([requirement])))]
        found |= {module, "botocore"} if module == "boto3" else {module}
    return found


def test_each_command_checks_for_packages_its_extra_installs() -> None:
    """`crawljob X` refuses to start without X's packages, naming the extra that installs them."""
    from crawljob import cli

    assert set(cli.NEEDS) == set(cli.SUBCOMMANDS) == set(cli.EXTRAS)
    for command, needed in cli.NEEDS.items():
        assert set(needed) <= installed_modules(cli.EXTRAS[command]), command
