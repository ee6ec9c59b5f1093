"""kubectl (1.35) against the real API server: printer columns and `kubectl explain` descriptions."""

from __future__ import annotations

from collections.abc import Callable

import yaml

from crawljob import kube, resource


async def test_get_crawljobs_shows_the_printer_columns(
    client: kube.KubeClient, namespace: str, kubectl: Callable[..., str]
) -> None:
    ref = resource.ObjectRef(bucket="landing", key="sales/2024.csv", etag="abc")
    body = resource.crawljob_manifest(ref, namespace)
    name = resource.crawljob_name(ref)
    await client.create(kube.CRAWLJOBS, namespace, body)
    status = {"phase": "Running", "progress": {"percent": "42%"}, "result": {"rowsWritten": 1234}}
    await client.patch(kube.CRAWLJOBS, namespace, name, {"status": status}, subresource="status")

    table = kubectl("get", "crawljobs").splitlines()
    assert table[0].split() == ["NAME", "BUCKET", "KEY", "PHASE", "PROGRESS", "ROWS", "AGE"]
    assert table[1].split()[:6] == [name, "landing", "sales/2024.csv", "Running", "42%", "1234"]
    assert kubectl("get", "crawljob").splitlines()[1].split()[0] == name


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
