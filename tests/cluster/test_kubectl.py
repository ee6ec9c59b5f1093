"""kubectl (1.35) against the real API server: printer columns, labels, `kubectl explain`
descriptions, and every kubectl command of the README (the same list the local stack's test runs)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from crawljob import kube, resource
from fakes.readme_kubectl import manifest, prepare, readme_commands

from .conftest import Cluster


async def test_get_crawljobs_shows_the_printer_columns(
    client: kube.KubeClient, namespace: str, kubectl: Callable[..., str]
) -> None:
    ref = resource.ObjectRef(bucket="landing", key="sales/2024.csv", etag="abc")
    body = resource.crawljob_manifest(ref, namespace)
    name = resource.crawljob_name(ref)
    await client.create(kube.CRAWLJOBS, namespace, body)
    status = {
        "phase": "Running",
        "reason": "WorkerRunning",
        "message": "the worker is running",
        "progress": {"percent": "42%"},
        "result": {"rowsWritten": 1234},
    }
    await client.patch(kube.CRAWLJOBS, namespace, name, {"status": status}, subresource="status")

    table = kubectl("get", "crawljobs").splitlines()
    assert table[0].split() == ["NAME", "BUCKET", "KEY", "PHASE", "PROGRESS", "ROWS", "REASON", "AGE"]
    assert table[1].split()[:7] == [
        name,
        "landing",
        "sales/2024.csv",
        "Running",
        "42%",
        "1234",
        "WorkerRunning",
    ]
    assert kubectl("get", "crawljob").splitlines()[1].split()[0] == name
    wide = kubectl("get", "crawljobs", "-o", "wide")
    assert wide.splitlines()[0].split()[-1] == "MESSAGE" and "the worker is running" in wide


async def _failed_crawljob(client: kube.KubeClient, namespace: str) -> str:
    ref = resource.ObjectRef(bucket="inbox", key="daily/2024-05-01.csv", etag="abc")
    created = await client.create(kube.CRAWLJOBS, namespace, resource.crawljob_manifest(ref, namespace))
    name = str(created["metadata"]["name"])
    status = {"phase": "Failed", "reason": "BadInput", "message": "the source is not readable CSV"}
    updated = await client.patch(kube.CRAWLJOBS, namespace, name, {"status": status}, "status")
    await client.patch(
        kube.CRAWLJOBS, namespace, name, {"metadata": {"labels": resource.labels_patch(updated)}}
    )
    return name


def _watch_lines(argv: list[str], env: dict[str, str], count: int) -> str:
    """The first *count* lines of a watching command, which is then stopped."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        return "".join(process.stdout.readline() for _ in range(count))
    finally:
        process.terminate()
        process.wait(10)


async def test_every_readme_kubectl_command_works_against_the_real_server(
    client: kube.KubeClient,
    namespace: str,
    cluster: Cluster,
    kubectl: Callable[..., str],
    kubectl_binary: Path,
    tmp_path: Path,
) -> None:
    name = await _failed_crawljob(client, namespace)
    by_hand = tmp_path / "crawljob.yaml"
    by_hand.write_text(manifest("by-hand"))
    commands = readme_commands()
    assert len(commands) >= 10, commands
    for command in commands:
        argv = prepare(command, name, namespace, cluster.kubeconfig, by_hand)
        if "-w" in argv:
            seen = _watch_lines([str(kubectl_binary), *argv[1:]], cluster.env(), 3)  # header + 2 CrawlJobs
            assert name in seen, seen
            continue
        output = kubectl(*argv[3:]) if argv[1:3] == ["-n", namespace] else kubectl(*argv[1:])
        assert "error" not in output.lower(), f"{command}: {output}"
    assert (await client.get(kube.CRAWLJOBS, namespace, "by-hand"))["spec"]["output"] == {"format": "jsonl"}
    annotations = (await client.get(kube.CRAWLJOBS, namespace, name))["metadata"]["annotations"]
    assert annotations["crawljob.io/cancel"] == "reason"
    failed = kubectl("get", "cjob", "-l", "crawljob.io/phase=Failed", "-o", "name")
    assert failed.split() == [f"crawljob.crawljob.io/{name}"]


async def test_short_names_do_not_shadow_builtin_resources(
    client: kube.KubeClient, namespace: str, kubectl: Callable[..., str]
) -> None:
    crd = yaml.safe_load(resource.crd_path().read_text())
    ours = set(crd["spec"]["names"].get("shortNames") or [])
    builtin: dict[str, str] = {}
    for group in ("/api/v1", "/apis/batch/v1beta1", "/apis/batch/v1", "/apis/apps/v1"):
        for item in (await client.request("GET", group))["resources"]:
            for short in item.get("shortNames") or []:
                builtin[short] = f"{group}/{item['name']}"
    assert {short: builtin[short] for short in ours if short in builtin} == {}
    await client.create(
        kube.CRAWLJOBS, namespace, resource.crawljob_manifest(resource.ObjectRef("b", "k.csv"), namespace)
    )
    for short in ours:
        assert "No resources found" not in kubectl("get", short, check=False)


async def test_explain_crawljob_spec_reads_the_schema_descriptions(kubectl: Callable[..., str]) -> None:
    text = kubectl("explain", "crawljob.spec")
    assert "What to crawl, where to write it, and how to run the worker." in text
    for field in ("source", "output", "csv", "maxRejectRatio", "shards", "backoffLimit"):
        assert field in text
    source = " ".join(kubectl("explain", "crawljob.spec.source").split())
    assert "Object key, stored decoded" in source
    assert "bucket" in source and "-required-" in source
