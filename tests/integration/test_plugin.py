"""`kubectl crawljob` (the kubectl-crawljob plugin, run through kubectl 1.35) against the emulator,
moto's S3 and, for logs, the operator and the job runner."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from crawljob import kube, resource, sources
from crawljob.local.emulator import Emulator
from crawljob.receiver.app import create_app
from crawljob.receiver.settings import ReceiverSettings
from fakes.stack import NAMESPACE, crawljob, running_operator, running_runner, wait_phase

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def kubectl_env(emulator: tuple[Emulator, str], tmp_path: Path, s3_env: dict[str, str]) -> dict[str, str]:
    """kubectl and the plugin on PATH, a kubeconfig of the emulator, the local S3's AWS_* variables."""
    if not shutil.which("kubectl", path=str(BIN)):
        pytest.fail("kubectl not found: run `make tools` (make test does)", pytrace=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": emulator[1]}}],
                "users": [{"name": "local", "user": {}}],
                "contexts": [
                    {
                        "name": "local",
                        "context": {"cluster": "local", "user": "local", "namespace": NAMESPACE},
                    }
                ],
                "current-context": "local",
            }
        )
    )
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(kubeconfig),
        "KUBECACHEDIR": str(tmp_path / "cache"),
    }


async def kubectl(env: dict[str, str], *args: str, code: int = 0) -> str:
    """Run `kubectl ARGS` asynchronously (the emulator answers on this loop); stdout + stderr."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "kubectl"), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    assert process.returncode == code, f"kubectl {' '.join(args)} exited {process.returncode}: {text}"
    return text


async def test_submit_names_the_object_version_as_the_receiver_does(
    kubectl_env: dict[str, str],
    kube_client: kube.KubeClient,
    emulator: tuple[Emulator, str],
    aiohttp_client: Any,
    s3_client: Any,
    bucket: str,
) -> None:
    s3_client.put_object(Bucket=bucket, Key="day/one #1.csv", Body=b"a\n1\n")
    etag = s3_client.head_object(Bucket=bucket, Key="day/one #1.csv")["ETag"].strip('"')
    out = await kubectl(kubectl_env, "crawljob", "submit", f"s3://{bucket}/day/one #1.csv")
    name = resource.crawljob_name(resource.ObjectRef(bucket, "day/one #1.csv", etag=etag))
    assert out.strip() == f"crawljob.crawljob.io/{name} created (eTag {etag})"
    stored = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, name)
    assert stored["spec"]["source"] == {"bucket": bucket, "key": "day/one #1.csv", "eTag": etag, "size": 4}
    # S3's own event of the same upload, through the receiver, is the same CrawlJob.
    receiver = await aiohttp_client(
        create_app(ReceiverSettings(kube_server=emulator[1], namespace=NAMESPACE))
    )
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket},
              "object": {"key": "day/one+%231.csv", "eTag": etag}}}  # fmt: skip
    answer = await (await receiver.post("/v1/trigger", json={"Records": [record]})).json()
    assert answer["crawljobs"][0]["name"] == name and answer["crawljobs"][0]["status"] == "duplicate"
    again = await kubectl(kubectl_env, "crawljob", "submit", f"s3://{bucket}/day/one #1.csv")
    assert "unchanged (duplicate" in again
    s3_client.put_object(Bucket=bucket, Key="day/one #1.csv", Body=b"a\n2\n")
    newer = await kubectl(kubectl_env, "crawljob", "submit", f"s3://{bucket}/day/one #1.csv")
    assert " created " in newer and name not in newer
    missing = await kubectl(kubectl_env, "crawljob", "submit", f"s3://{bucket}/absent.csv", code=1)
    assert f"error: s3://{bucket}/absent.csv does not exist" in missing
    bad = await kubectl(kubectl_env, "crawljob", "submit", f"s3://{bucket}/", code=1)
    assert "no object key" in bad


async def _finished(
    client: kube.KubeClient, key: str, phase: str, ago: datetime.timedelta, bucket: str
) -> str:
    body = resource.crawljob_manifest(resource.ObjectRef(bucket, key, etag="e"), NAMESPACE)
    name = str(body["metadata"]["name"])  # type: ignore[index]
    await client.create(kube.CRAWLJOBS, NAMESPACE, body)
    when = (datetime.datetime.now(tz=datetime.UTC) - ago).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "phase": phase,
        "reason": "BadInput" if phase == "Failed" else "Completed",
        "completionTime": when,
    }
    updated = await client.patch(kube.CRAWLJOBS, NAMESPACE, name, {"status": status}, "status")
    await client.patch(
        kube.CRAWLJOBS, NAMESPACE, name, {"metadata": {"labels": resource.labels_patch(updated)}}
    )
    return name


async def test_rerun_failed_since_an_hour_annotates_only_those(
    kubectl_env: dict[str, str], kube_client: kube.KubeClient
) -> None:
    recent = await _finished(kube_client, "a.csv", "Failed", datetime.timedelta(minutes=10), "inbox")
    old = await _finished(kube_client, "b.csv", "Failed", datetime.timedelta(hours=3), "inbox")
    other_bucket = await _finished(kube_client, "c.csv", "Failed", datetime.timedelta(minutes=5), "archive")
    fine = await _finished(kube_client, "d.csv", "Succeeded", datetime.timedelta(minutes=1), "inbox")
    dry = await kubectl(kubectl_env, "crawljob", "rerun", "--failed", "--since", "1h", "--dry-run")
    assert dry.split("\n")[:2] == [f"crawljob.crawljob.io/{recent} rerun (dry run)",
                                   f"crawljob.crawljob.io/{other_bucket} rerun (dry run)"]  # fmt: skip
    out = await kubectl(
        kubectl_env, "crawljob", "rerun", "--failed", "--since", "1h", "-l", "crawljob.io/bucket=inbox"
    )
    assert out.strip() == f"crawljob.crawljob.io/{recent} rerun requested"

    async def annotations(name: str) -> dict[str, str]:
        got = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, name)
        return dict(got["metadata"].get("annotations") or {})

    assert (await annotations(recent))["crawljob.io/rerun"].isdigit()
    for untouched in (old, other_bucket, fine):
        assert "crawljob.io/rerun" not in await annotations(untouched)
    named = await kubectl(kubectl_env, "crawljob", "rerun", old)
    assert named.strip() == f"crawljob.crawljob.io/{old} rerun requested"
    usage = await kubectl(kubectl_env, "crawljob", "rerun", code=1)
    assert "either --failed or CrawlJob names" in usage
    assert "--since takes a duration" in await kubectl(
        kubectl_env, "crawljob", "rerun", "--failed", "--since", "yesterday", code=1
    )


async def test_logs_show_the_workers_output_also_after_its_job_is_gone(
    kubectl_env: dict[str, str], kube_client: kube.KubeClient, emulator: tuple[Emulator, str], tmp_path: Path
) -> None:
    emulator[0].pod_log_dir = tmp_path / "pods"
    body = crawljob("logs/crash.csv", backoffLimit=0)
    name = body["metadata"]["name"]
    async with (
        running_runner(kube_client, log_dir=tmp_path / "pods"),
        running_operator(emulator[1], tmp_path / "operator.log"),
    ):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        await wait_phase(kube_client, name, {"Failed"}, timeout=60)
    out = await kubectl(kubectl_env, "crawljob", "logs", name)
    assert "RuntimeError: fake crash" in out
    await kube_client.delete(kube.JOBS, NAMESPACE, name)  # the Job is gone; its pod is still retained
    assert "RuntimeError: fake crash" in await kubectl(kubectl_env, "crawljob", "logs", name, "--tail", "1")
    none = await kubectl(kubectl_env, "crawljob", "logs", "never-ran", code=1)
    assert "no worker pod of crawljob never-ran is retained" in none


async def test_sweep_crawls_a_new_object_of_a_source_at_once_and_reports_it(
    kubectl_env: dict[str, str],
    kube_client: kube.KubeClient,
    emulator: tuple[Emulator, str],
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    source = {
        "apiVersion": resource.API_VERSION,
        "kind": sources.KIND,
        "metadata": {"name": "feed", "namespace": NAMESPACE},
        "spec": {"bucket": bucket, "prefix": "in/", "interval": "1h"},
    }
    async with running_operator(emulator[1], tmp_path / "operator.log"):
        await kube_client.create(kube.CRAWLSOURCES, NAMESPACE, source)
        first = await kubectl(kubectl_env, "crawljob", "sweep", "feed", "--wait", "30")
        assert "CrawlJobs created" in first
        s3_client.put_object(Bucket=bucket, Key="in/late.csv", Body=b"a,b\n1,2\n")
        etag = s3_client.head_object(Bucket=bucket, Key="in/late.csv")["ETag"].strip('"')
        out = await kubectl(kubectl_env, "crawljob", "sweep", "feed", "--wait", "30")
        assert "1 matched, 1 CrawlJobs created" in out, out
        name = resource.crawljob_name(resource.ObjectRef(bucket, "in/late.csv", etag=etag))
        assert name in {
            item["metadata"]["name"] for item in await kube_client.list(kube.CRAWLJOBS, NAMESPACE)
        }
    missing = await kubectl(kubectl_env, "crawljob", "sweep", "no-such-source", code=1)
    assert "no-such-source" in missing
