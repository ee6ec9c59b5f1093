"""CrawlSources on the real API server: schema validation (422), defaults, kubectl, and a sweep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from crawljob import kube, resource, sources
from fakes.waiting import wait_for

from .conftest import Child


def source_body(namespace: str, name: str = "feed", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": sources.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"bucket": "landing", "prefix": "in/", **spec},
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"interval": "soon"}, "spec.interval"),
        ({"interval": "10"}, "spec.interval"),
        ({"bucket": "Not_A_Bucket"}, "spec.bucket"),
        ({"since": "yesterday"}, "spec.since"),
        ({"template": {"maxRejectRatio": 2}}, "spec.template.maxRejectRatio"),
        ({"template": {"output": {"format": "xml"}}}, "spec.template.output.format"),
        ({"suffixes": [""]}, "spec.suffixes"),
    ],
)
async def test_invalid_crawlsource_is_refused_with_422_naming_the_field(
    client: kube.KubeClient, namespace: str, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(kube.Invalid) as refused:
        await client.create(kube.CRAWLSOURCES, namespace, source_body(namespace, **spec))
    assert refused.value.status == 422
    assert field in refused.value.message


async def test_the_server_defaults_interval_and_suspend(client: kube.KubeClient, namespace: str) -> None:
    created = await client.create(kube.CRAWLSOURCES, namespace, source_body(namespace))
    assert created["spec"]["interval"] == sources.DEFAULT_INTERVAL
    assert created["spec"]["suspend"] is False
    assert sources.source_from_body(created).interval_seconds == 600.0


async def test_kubectl_get_and_explain_crawlsources(
    client: kube.KubeClient, namespace: str, kubectl: Callable[..., str]
) -> None:
    await client.create(kube.CRAWLSOURCES, namespace, source_body(namespace))
    table = kubectl("get", "crawlsources").splitlines()
    assert table[0].split() == ["NAME", "BUCKET", "PREFIX", "READY", "LAST", "SWEEP", "CRAWLJOBS", "AGE"]
    assert table[1].split()[:3] == ["feed", "landing", "in/"]
    assert kubectl("get", sources.SHORT_NAME).splitlines()[1].split()[0] == "feed"
    text = " ".join(kubectl("explain", "crawlsource.spec").split())
    assert "how often to sweep it" in text
    for field in ("bucket", "prefix", "suffixes", "exclude", "since", "interval", "suspend", "template"):
        assert field in text
    template = " ".join(kubectl("explain", "crawlsource.spec.template").split())
    assert "maxRejectRatio <number>" in template and "source <Object>" not in template


async def test_a_sweep_on_the_real_server_creates_labelled_crawljobs_and_a_kept_status(
    client: kube.KubeClient,
    namespace: str,
    operator: Callable[..., Child],
    local_s3: Any,
    s3_client: Any,
    bucket: str,
    kubectl: Callable[..., str],
) -> None:
    names = set()
    for key in ("in/a.csv", "in/b.csv", "out/c.csv"):
        etag = s3_client.put_object(Bucket=bucket, Key=key, Body=b"x,y\n1,2\n")["ETag"].strip('"')
        if key.startswith("in/"):
            names.add(resource.crawljob_name(resource.ObjectRef(bucket, key, etag=etag)))
    operator(CRAWLJOB_MAX_ACTIVE="1", **local_s3.environment())
    body = source_body(namespace, bucket=bucket, template={"maxRejectRatio": 0.3})
    await client.create(kube.CRAWLSOURCES, namespace, body)

    async def swept() -> dict[str, Any] | None:
        status = (await client.get(kube.CRAWLSOURCES, namespace, "feed")).get("status") or {}
        return status if status.get("lastSweepTime") else None

    status = await wait_for(swept, timeout=60, interval=0.5, what="the first sweep")
    crawljobs = {item["metadata"]["name"]: item for item in await client.list(kube.CRAWLJOBS, namespace)}
    assert set(crawljobs) == names
    for item in crawljobs.values():
        assert item["metadata"]["labels"][sources.LABEL_SOURCE] == "feed"
        assert item["spec"]["maxRejectRatio"] == 0.3
    # Every status field survived the server's structural pruning.
    assert status["crawljobsCreatedTotal"] == 2 and status["objectsMatched"] == 2
    assert status["watermark"] and status["nextSweepTime"] and status["observedGeneration"] == 1
    ready = next(item for item in status["conditions"] if item["type"] == "Ready")
    assert ready["status"] == "True"
    row = kubectl("get", "crawlsources").splitlines()[1].split()
    assert row[3] == "True" and row[-2] == "2"
    await asyncio.sleep(0)
