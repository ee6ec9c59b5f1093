"""kubectl (1.35) against the real API server: printer columns, labels, `kubectl explain`
descriptions, and every kubectl command of the README (the same list the local stack's test runs)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from crawljob import kube, resource
from fakes.readme_kubectl import (
    README_BUCKET,
    README_KEY,
    failed_crawljob,
    manifest,
    prepare,
    readme_commands,
)

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


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


def _watch_lines(argv: list[str], env: dict[str, str], count: int) -> str:
    """The first *count* lines of a watching command, which is then stopped."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        return "".join(process.stdout.readline() for _ in range(count))
    finally:
        process.terminate()
        process.wait(10)


# The real control plane of this tier has no node and no kubelet API: the API server cannot fetch a
# container's log (kubectl logs fails the same way there). The local stack's test runs it.
NEEDS_A_KUBELET = {"kubectl crawljob logs NAME"}


async def test_every_readme_kubectl_command_works_against_the_real_server(
    client: kube.KubeClient,
    namespace: str,
    cluster: Cluster,
    kubectl: Callable[..., str],
    kubectl_binary: Path,
    tmp_path: Path,
    local_s3: Any,
    s3_client: Any,
) -> None:
    if README_BUCKET not in {item["Name"] for item in s3_client.list_buckets()["Buckets"]}:
        s3_client.create_bucket(Bucket=README_BUCKET)
    s3_client.put_object(Bucket=README_BUCKET, Key=README_KEY, Body=b"t,v\n1,2\n")
    name = await failed_crawljob(client, namespace)
    plugin_env = cluster.env(**local_s3.environment())
    by_hand = tmp_path / "crawljob.yaml"
    by_hand.write_text(manifest("by-hand"))
    commands = readme_commands()
    assert len(commands) >= 10, commands
    outputs: dict[str, str] = {}
    for command in commands:
        if command in NEEDS_A_KUBELET:
            continue
        argv = prepare(command, name, namespace, cluster.kubeconfig, by_hand)
        if argv[1] == "crawljob":  # the plugin: with the local S3's AWS_* variables
            outputs[argv[4]] = _run([str(kubectl_binary), *argv[1:]], plugin_env)
            continue
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
    assert " created (eTag " in outputs["submit"]
    assert outputs["rerun"].strip() == f"crawljob.crawljob.io/{name} rerun requested"
    assert set(commands) >= NEEDS_A_KUBELET


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
