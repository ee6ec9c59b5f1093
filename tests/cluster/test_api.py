"""The CRD and the API client against the real kube-apiserver: schema, status, conflicts, selectors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from crawljob import kube, resource


def crawljob(namespace: str, name: str = "sales-2024-csv-0123456789", **spec: Any) -> dict[str, Any]:
    body = resource.crawljob_manifest(
        resource.ObjectRef(bucket="landing", key="sales/2024.csv", etag="abc"), namespace
    )
    body["metadata"]["name"] = name  # type: ignore[index]
    body["spec"].update(spec)  # type: ignore[union-attr]
    return body


async def test_valid_crawljob_is_stored_with_server_metadata(client: kube.KubeClient, namespace: str) -> None:
    created = await client.create(kube.CRAWLJOBS, namespace, crawljob(namespace))
    metadata = created["metadata"]
    assert metadata["uid"] and metadata["resourceVersion"] and metadata["creationTimestamp"]
    assert metadata["generation"] == 1
    assert created["spec"]["source"] == {"bucket": "landing", "key": "sales/2024.csv", "eTag": "abc"}


@pytest.mark.parametrize(
    ("spec_change", "field"),
    [
        ({"source": {"bucket": "landing"}}, "spec.source.key"),
        ({"source": {"bucket": "landing", "key": ""}}, "spec.source.key"),
        ({"output": {"format": "xml"}}, "spec.output.format"),
        ({"output": {"uri": "http://example.com/out"}}, "spec.output.uri"),
        ({"maxRejectRatio": 1.5}, "spec.maxRejectRatio"),
        ({"shards": 0}, "spec.shards"),
        ({"csv": {"delimiter": ";;"}}, "spec.csv.delimiter"),
    ],
)
async def test_invalid_crawljob_is_refused_with_422_naming_the_field(
    client: kube.KubeClient, namespace: str, spec_change: dict[str, Any], field: str
) -> None:
    with pytest.raises(kube.Invalid) as refused:
        await client.create(kube.CRAWLJOBS, namespace, crawljob(namespace, **spec_change))
    assert refused.value.status == 422
    assert field in refused.value.message
    assert await client.list(kube.CRAWLJOBS, namespace) == []


async def test_crawljob_without_spec_is_refused(client: kube.KubeClient, namespace: str) -> None:
    body = crawljob(namespace)
    del body["spec"]
    with pytest.raises(kube.Invalid) as refused:
        await client.create(kube.CRAWLJOBS, namespace, body)
    assert refused.value.status == 422
    assert "spec" in refused.value.message


async def test_same_name_twice_is_a_conflict(client: kube.KubeClient, namespace: str) -> None:
    # The receiver's "duplicate" answer rests on this: a redelivered event makes the same name.
    await client.create(kube.CRAWLJOBS, namespace, crawljob(namespace))
    with pytest.raises(kube.Conflict) as conflict:
        await client.create(kube.CRAWLJOBS, namespace, crawljob(namespace))
    assert conflict.value.status == 409
    assert "already exists" in conflict.value.message


async def test_status_is_a_subresource_and_keeps_operator_bookkeeping(
    client: kube.KubeClient, namespace: str
) -> None:
    name = crawljob(namespace)["metadata"]["name"]
    await client.create(kube.CRAWLJOBS, namespace, crawljob(namespace))
    # A status write through the main resource is ignored by the server...
    await client.patch(kube.CRAWLJOBS, namespace, name, {"status": {"phase": "Running"}})
    assert "status" not in await client.get(kube.CRAWLJOBS, namespace, name)
    # ...through /status it sticks, and kopf's own fields (status.kopf) are not pruned.
    status = {
        "phase": "Succeeded",
        "progress": {"bytesRead": 10, "bytesTotal": 10, "rowsRead": 3, "percent": "100%"},
        "result": {"rowsRead": 3, "rowsWritten": 3, "rowsRejected": 0},
        "kopf": {"progress": {"create_job": {"started": "2024-01-01T00:00:00Z"}}},
    }
    await client.patch(kube.CRAWLJOBS, namespace, name, {"status": status}, subresource="status")
    stored = await client.get(kube.CRAWLJOBS, namespace, name)
    assert stored["status"]["phase"] == "Succeeded"
    assert stored["status"]["result"]["rowsWritten"] == 3
    assert stored["status"]["kopf"] == status["kopf"]
    assert stored["metadata"]["generation"] == 1  # status writes don't bump the generation


async def test_spec_change_bumps_generation(client: kube.KubeClient, namespace: str) -> None:
    name = crawljob(namespace)["metadata"]["name"]
    await client.create(kube.CRAWLJOBS, namespace, crawljob(namespace))
    changed = await client.patch(kube.CRAWLJOBS, namespace, name, {"spec": {"maxRejectRatio": 0.5}})
    assert changed["metadata"]["generation"] == 2


async def test_stale_resource_version_write_is_a_conflict(client: kube.KubeClient, namespace: str) -> None:
    name = crawljob(namespace)["metadata"]["name"]
    original = await client.create(kube.CRAWLJOBS, namespace, crawljob(namespace))
    stale = copy.deepcopy(original)
    fresh = copy.deepcopy(original)
    fresh["spec"]["maxRejectRatio"] = 0.2
    await client.request("PUT", kube.CRAWLJOBS.path(namespace, name), fresh)
    stale["spec"]["maxRejectRatio"] = 0.3
    with pytest.raises(kube.Conflict) as conflict:
        await client.request("PUT", kube.CRAWLJOBS.path(namespace, name), stale)
    assert conflict.value.status == 409
    assert "the object has been modified" in conflict.value.message
    assert (await client.get(kube.CRAWLJOBS, namespace, name))["spec"]["maxRejectRatio"] == 0.2


async def test_label_selectors_are_applied_by_the_server(client: kube.KubeClient, namespace: str) -> None:
    first = crawljob(namespace, name="first-0000000000")
    second = crawljob(namespace, name="second-0000000000")
    second["metadata"]["labels"]["team"] = "finance"
    await client.create(kube.CRAWLJOBS, namespace, first)
    await client.create(kube.CRAWLJOBS, namespace, second)
    answer = await client.request(
        "GET", kube.CRAWLJOBS.path(namespace), params={"labelSelector": "team=finance"}
    )
    assert [item["metadata"]["name"] for item in answer["items"]] == ["second-0000000000"]
