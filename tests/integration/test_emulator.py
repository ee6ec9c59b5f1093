"""The emulator subclass behaves like an API server where crawljob relies on it."""

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest

from crawljob import kube
from crawljob.local.emulator import Emulator


def _crawljob(name: str) -> dict[str, object]:
    return {
        "apiVersion": "crawljob.io/v1alpha1",
        "kind": "CrawlJob",
        "metadata": {"name": name},
        "spec": {"source": {"bucket": "b", "key": "k.csv"}},
    }


async def test_create_assigns_uid_and_a_second_create_conflicts(kube_client: kube.KubeClient) -> None:
    created = await kube_client.create(kube.CRAWLJOBS, "default", _crawljob("one"))
    assert created["metadata"]["uid"]
    assert created["metadata"]["creationTimestamp"]
    with pytest.raises(kube.Conflict):
        await kube_client.create(kube.CRAWLJOBS, "default", _crawljob("one"))


async def test_status_patch_merges_and_list_filters_by_label(
    kube_client: kube.KubeClient, emulator: tuple[Emulator, str]
) -> None:
    await kube_client.create(kube.CRAWLJOBS, "default", _crawljob("two"))
    await kube_client.patch(kube.CRAWLJOBS, "default", "two", {"status": {"phase": "Running"}}, "status")
    await kube_client.patch(
        kube.CRAWLJOBS, "default", "two", {"status": {"progress": {"percent": "5%"}}}, "status"
    )
    got = await kube_client.get(kube.CRAWLJOBS, "default", "two")
    assert got["status"] == {"phase": "Running", "progress": {"percent": "5%"}}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "labels": {"a": "b"}},
        "spec": {},
    }
    await kube_client.create(kube.JOBS, "default", job)
    other = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "k", "labels": {"a": "c"}},
        "spec": {},
    }
    await kube_client.create(kube.JOBS, "default", other)
    assert [
        item["metadata"]["name"] for item in await kube_client.list(kube.JOBS, "default", {"a": "b"})
    ] == ["j"]
    raw = await kube_client.request("GET", kube.JOBS.path("default"), params={"labelSelector": "a=c"})
    assert raw["kind"] == "JobList"
    assert [item["metadata"]["name"] for item in raw["items"]] == ["k"]


async def test_a_patch_with_a_stale_resource_version_is_a_conflict_like_the_api_server(
    kube_client: kube.KubeClient, emulator: tuple[Emulator, str]
) -> None:
    created = await kube_client.create(kube.CRAWLJOBS, "default", _crawljob("rv"))
    version = created["metadata"]["resourceVersion"]
    fresh = {"metadata": {"resourceVersion": version}, "status": {"progress": {"rowsRead": 1}}}
    patched = await kube_client.patch(kube.CRAWLJOBS, "default", "rv", fresh, "status")
    assert patched["metadata"]["resourceVersion"] != version
    stale = {"metadata": {"resourceVersion": version}, "status": {"progress": {"rowsRead": 2}}}
    with pytest.raises(kube.Conflict) as refused:
        await kube_client.patch(kube.CRAWLJOBS, "default", "rv", stale, "status")
    assert "the object has been modified" in str(refused.value)
    async with (
        aiohttp.ClientSession() as session,
        session.patch(
            emulator[1] + kube.CRAWLJOBS.path("default", "rv"),
            data=json.dumps({**stale, "spec": {"shards": 2}}),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as answer,
    ):
        assert answer.status == 409
        raw = await answer.json()
    assert (raw["kind"], raw["reason"], raw["code"]) == ("Status", "Conflict", 409)
    got = await kube_client.get(kube.CRAWLJOBS, "default", "rv")
    assert got["status"]["progress"]["rowsRead"] == 1 and "shards" not in got["spec"]
    # Without a resourceVersion a patch is unconditional, as on a real server.
    await kube_client.patch(
        kube.CRAWLJOBS, "default", "rv", {"status": {"progress": {"rowsRead": 3}}}, "status"
    )
    assert (await kube_client.get(kube.CRAWLJOBS, "default", "rv"))["status"]["progress"]["rowsRead"] == 3


async def test_missing_object_is_not_found(kube_client: kube.KubeClient) -> None:
    with pytest.raises(kube.NotFound):
        await kube_client.get(kube.CRAWLJOBS, "default", "absent")


async def test_unreachable_api_is_unavailable() -> None:
    async with kube.KubeClient(kube.Connection(server="http://127.0.0.1:9"), timeout=2) as client:
        with pytest.raises(kube.Unavailable):
            await client.get(kube.CRAWLJOBS, "default", "x")


async def test_kubectl_table_requests_get_the_crd_printer_columns(kube_client: kube.KubeClient) -> None:
    await kube_client.create(kube.CRAWLJOBS, "default", _crawljob("tabled"))
    await kube_client.patch(
        kube.CRAWLJOBS,
        "default",
        "tabled",
        {
            "status": {
                "phase": "Succeeded",
                "reason": "Completed",
                "message": "done",
                "progress": {"percent": "100%"},
                "result": {"rowsWritten": 42},
            }
        },
        "status",
    )
    async with kube_client.session.get(
        kube_client.connection.server + kube.CRAWLJOBS.path("default"),
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"},
    ) as response:
        table = await response.json()
    assert table["kind"] == "Table"
    assert [column["name"] for column in table["columnDefinitions"]] == [
        "Name",
        "Bucket",
        "Key",
        "Phase",
        "Progress",
        "Rows",
        "Reason",
        "Age",
        "Message",
    ]
    assert table["columnDefinitions"][-1]["priority"] == 1  # kubectl shows it with -o wide only
    cells = table["rows"][0]["cells"]
    assert cells[:7] + cells[8:] == ["tabled", "b", "k.csv", "Succeeded", "100%", 42, "Completed", "done"]


async def test_kubectl_get_crawlsources_shows_bucket_prefix_ready_last_sweep_and_crawljobs(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = {
        "apiVersion": "crawljob.io/v1alpha1",
        "kind": "CrawlSource",
        "metadata": {"name": "feed", "namespace": "default"},
        "spec": {"bucket": "landing", "prefix": "in/"},
    }
    await kube_client.create(kube.CRAWLSOURCES, "default", body)
    status = {
        "conditions": [
            {"type": "Reconciling", "status": "False", "reason": "Swept"},
            {"type": "Ready", "status": "True", "reason": "Swept"},
        ],
        "lastSweepTime": "2026-01-01T00:00:00Z",
        "crawljobsCreatedTotal": 7,
    }
    await kube_client.patch(kube.CRAWLSOURCES, "default", "feed", {"status": status}, "status")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "e", "cluster": {"server": emulator[1]}}],
                "users": [{"name": "e", "user": {}}],
                "contexts": [{"name": "e", "context": {"cluster": "e", "user": "e", "namespace": "default"}}],
                "current-context": "e",
            }
        )
    )
    kubectl = str(Path(sys.executable).with_name("kubectl"))
    process = await asyncio.create_subprocess_exec(
        kubectl, "--kubeconfig", str(kubeconfig), "get", "crawlsources",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    header, row = out.decode().splitlines()
    assert header.split() == ["NAME", "BUCKET", "PREFIX", "READY", "LAST", "SWEEP", "CRAWLJOBS", "AGE"]
    assert row.split()[:5] == ["feed", "landing", "in/", "True", row.split()[4]]
    assert row.split()[5] == "7"
