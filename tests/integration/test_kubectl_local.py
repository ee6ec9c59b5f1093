"""kubectl 1.35 against the local stack's emulator, exactly as against a real API server: every
kubectl command of the README, single-object get/describe/annotate, explain and create -f."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from crawljob import kube, resource
from crawljob.local import runner
from crawljob.local.emulator import Emulator
from fakes.readme_kubectl import (
    README_BUCKET,
    README_KEY,
    failed_crawljob,
    manifest,
    prepare,
    readme_commands,
)

NAMESPACE = "default"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def kubectl_binary() -> Path:
    found = shutil.which("kubectl", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail("kubectl not found: run `make tools` (make test does)", pytrace=False)
    return Path(found)


@pytest.fixture
def kubeconfig(emulator: tuple[Emulator, str], tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    cluster = {"name": "local", "cluster": {"server": emulator[1]}}
    context = {"name": "local", "context": {"cluster": "local", "user": "local", "namespace": NAMESPACE}}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "local", "user": {}}],
        "contexts": [context],
        "current-context": "local",
    }
    path.write_text(json.dumps(config))
    return path


async def kubectl(
    binary: Path, kubeconfig: Path, *args: str, check: bool = True, watch_for: str | None = None
) -> str:
    """Run kubectl (asynchronously: the emulator answers on this event loop); its output.

    With *watch_for*, a watching command is read until that text appears, then stopped.
    """
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # kubectl finds the plugin there
        "KUBECONFIG": str(kubeconfig),
        "KUBECACHEDIR": str(kubeconfig.parent / "cache"),
    }
    process = await asyncio.create_subprocess_exec(
        str(binary), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    if watch_for is not None:
        seen = b""
        try:
            async with asyncio.timeout(30):
                while watch_for.encode() not in seen:
                    line = await process.stdout.readline()
                    assert line, f"kubectl {' '.join(args)} ended before showing {watch_for}: {seen!r}"
                    seen += line
        finally:
            process.terminate()
            await process.wait()
        return seen.decode()
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    if check:
        assert process.returncode == 0, f"kubectl {' '.join(args)} failed ({process.returncode}): {text}"
    return text


async def _worker_pod_with_log(client: kube.KubeClient, emulator: Emulator, name: str, log_dir: Path) -> None:
    """The worker pod of *name* as the job runner leaves it: the pod, and its output kept where the
    emulator serves `pods/NAME/log` from (tests/integration/test_plugin.py runs the real runner)."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{name}-x1y2z", "labels": {resource.LABEL_CRAWLJOB: name}},
           "spec": {"containers": [{"name": "worker", "image": "crawljob-worker"}]}}  # fmt: skip
    await client.create(kube.PODS, NAMESPACE, pod)
    emulator.pod_log_dir = log_dir
    path = runner.pod_log_path(log_dir, NAMESPACE, f"{name}-x1y2z", "worker")
    path.parent.mkdir(parents=True)
    path.write_text("crawljob-worker: the source is not readable CSV\n")


async def test_every_readme_kubectl_command_works_against_the_local_stack(
    kube_client: kube.KubeClient,
    emulator: tuple[Emulator, str],
    kubectl_binary: Path,
    kubeconfig: Path,
    tmp_path: Path,
    s3_env: dict[str, str],
    s3_client: Any,
) -> None:
    if README_BUCKET not in {item["Name"] for item in s3_client.list_buckets()["Buckets"]}:
        s3_client.create_bucket(Bucket=README_BUCKET)
    s3_client.put_object(Bucket=README_BUCKET, Key=README_KEY, Body=b"t,v\n1,2\n")
    name = await failed_crawljob(kube_client, NAMESPACE)
    await _worker_pod_with_log(kube_client, emulator[0], name, tmp_path / "pods")
    by_hand = tmp_path / "crawljob.yaml"
    by_hand.write_text(manifest("by-hand"))
    commands = readme_commands()
    assert len(commands) >= 10, commands
    outputs: dict[str, str] = {}
    for command in commands:
        argv = prepare(command, name, NAMESPACE, kubeconfig, by_hand)[1:]
        watching = "-w" in argv
        output = await kubectl(kubectl_binary, kubeconfig, *argv, watch_for=name if watching else None)
        assert "error" not in output.lower(), f"{command}: {output}"
        if argv[:3] == ["crawljob", "-n", NAMESPACE]:
            outputs[argv[3]] = output
    by_hand_body = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, "by-hand")
    assert by_hand_body["spec"]["output"] == {"format": "jsonl"}
    annotations = (await kube_client.get(kube.CRAWLJOBS, NAMESPACE, name))["metadata"]["annotations"]
    assert annotations["crawljob.io/cancel"] == "reason"
    assert annotations["crawljob.io/rerun"].isdigit()
    # The plugin's verbs did their work: a submitted CrawlJob, the failed one re-run, its log shown.
    assert set(outputs) == {"submit", "rerun", "logs"}
    assert " created (eTag " in outputs["submit"]
    assert outputs["rerun"].strip() == f"crawljob.crawljob.io/{name} rerun requested"
    assert "the source is not readable CSV" in outputs["logs"]


async def test_get_shows_reason_and_wide_shows_message_and_labels_select_failed(
    kube_client: kube.KubeClient, kubectl_binary: Path, kubeconfig: Path
) -> None:
    name = await failed_crawljob(kube_client, NAMESPACE)
    other = resource.crawljob_manifest(resource.ObjectRef(README_BUCKET, "ok.csv", etag="e"), NAMESPACE)
    await kube_client.create(kube.CRAWLJOBS, NAMESPACE, other)
    table = (await kubectl(kubectl_binary, kubeconfig, "get", "cjob")).splitlines()
    assert table[0].split() == ["NAME", "BUCKET", "KEY", "PHASE", "PROGRESS", "ROWS", "REASON", "AGE"]
    row = next(line.split() for line in table if line.startswith(name))
    assert row[1:5] == [README_BUCKET, "daily/2024-05-01.csv", "Failed", "BadInput"]
    wide = await kubectl(kubectl_binary, kubeconfig, "get", "cjob", "-o", "wide")
    assert wide.splitlines()[0].split()[-1] == "MESSAGE"
    assert "the source is not readable CSV" in wide
    failed = await kubectl(
        kubectl_binary, kubeconfig, "get", "cjob", "-l", "crawljob.io/phase=Failed", "-o", "name"
    )
    assert failed.split() == [f"crawljob.crawljob.io/{name}"]
    inbox = await kubectl(
        kubectl_binary, kubeconfig, "get", "cjob", "-l", f"crawljob.io/bucket={README_BUCKET}", "-o", "name"
    )
    assert len(inbox.split()) == 2


async def test_describe_shows_only_the_crawljobs_own_events(
    kube_client: kube.KubeClient, kubectl_binary: Path, kubeconfig: Path
) -> None:
    name = await failed_crawljob(kube_client, NAMESPACE)
    uid = (await kube_client.get(kube.CRAWLJOBS, NAMESPACE, name))["metadata"]["uid"]
    for involved, reason in ((name, "BadInput"), ("someone-else", "Unrelated")):
        event = {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{involved}.1", "namespace": NAMESPACE},
            "involvedObject": {"apiVersion": resource.API_VERSION, "kind": resource.KIND, "name": involved,
                               "namespace": NAMESPACE, "uid": uid if involved == name else "other"},
            "reason": reason, "message": f"{reason} happened", "type": "Warning",
        }  # fmt: skip
        await kube_client.create(kube.EVENTS, NAMESPACE, event)
    text = await kubectl(kubectl_binary, kubeconfig, "describe", "crawljob", name)
    assert "BadInput happened" in text
    assert "Unrelated" not in text


async def test_explain_and_strict_create_use_the_crds_schema(
    kube_client: kube.KubeClient, kubectl_binary: Path, kubeconfig: Path, tmp_path: Path
) -> None:
    text = await kubectl(kubectl_binary, kubeconfig, "explain", "crawljob.spec")
    assert "What to crawl, where to write it, and how to run the worker." in text
    source = " ".join((await kubectl(kubectl_binary, kubeconfig, "explain", "crawljob.spec.source")).split())
    assert "Object key, stored decoded" in source and "-required-" in source
    metadata = await kubectl(kubectl_binary, kubeconfig, "explain", "crawljob.metadata.labels")
    assert "Map of string keys and values" in metadata
    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest("typo").replace("key: by-hand", "kee: by-hand"))
    refused = await kubectl(kubectl_binary, kubeconfig, "create", "-f", str(bad), check=False)
    assert 'unknown field "spec.source.kee"' in refused
    with pytest.raises(kube.NotFound):
        await kube_client.get(kube.CRAWLJOBS, NAMESPACE, "typo")
