"""The product on the real control plane: receiver → CrawlJob → operator → Job → Pod → result.

The receiver and the operator run as `crawljob receiver|operator` child processes configured only
through their documented CRAWLJOB_* variables; the real Job controller makes the Pods, the local
kubelet runs the worker in them against the local S3.
"""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from crawljob import kube, resource
from fakes.waiting import wait_for

from .conftest import Child, requires_modules
from .test_jobs import condition, job_pods, processes_with

ROWS = 250


RECEIVER = "crawljob.receiver.app"
OPERATOR = "crawljob.operator.app"
WORKER = "crawljob_worker.__main__"


def upload_csv(s3_client: Any, bucket: str, key: str, rows: int = ROWS) -> str:
    """Put a small CSV; its eTag (unquoted)."""
    lines = ["id,name,amount"] + [f"{i},item {i},{i * 1.5:.2f}" for i in range(rows)]
    answer = s3_client.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
    return str(answer["ETag"]).strip('"')


def s3_event(bucket: str, raw_key: str, etag: str, size: int = 100) -> dict[str, Any]:
    """An S3 notification as S3/SNS-raw/MinIO send it (the key URL-encoded, `+` for a space)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-05-01T12:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": raw_key, "size": size, "eTag": etag, "sequencer": "0062E99A88DC407460"},
                },
            }
        ]
    }


def post_json(url: str, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode()


def crawljob_for(bucket: str, key: str, etag: str, namespace: str) -> tuple[str, dict[str, object]]:
    ref = resource.ObjectRef(bucket=bucket, key=key, etag=etag)
    return resource.crawljob_name(ref), resource.crawljob_manifest(ref, namespace)


async def wait_phase(
    client: kube.KubeClient, namespace: str, name: str, phase: str, timeout: float = 120
) -> Any:
    async def reached() -> Any:
        current = await client.get(kube.CRAWLJOBS, namespace, name)
        return current if (current.get("status") or {}).get("phase") == phase else None

    return await wait_for(reached, timeout=timeout, interval=0.3, what=f"CrawlJob {name} phase {phase}")


@requires_modules(RECEIVER)
async def test_receiver_creates_the_crawljob_and_reports_redelivery_as_duplicate(
    client: kube.KubeClient, namespace: str, receiver: str
) -> None:
    status, text = post_json(receiver + "/v1/trigger", s3_event("landing", "daily/sales+2024.csv", "e0f1"))
    name, _ = crawljob_for("landing", "daily/sales 2024.csv", "e0f1", namespace)
    assert status == 202 and name in text
    stored = await client.get(kube.CRAWLJOBS, namespace, name)
    assert stored["spec"]["source"]["bucket"] == "landing"
    assert stored["spec"]["source"]["key"] == "daily/sales 2024.csv"  # decoded by the receiver
    assert stored["metadata"]["uid"]  # a real, schema-validated object

    status, text = post_json(receiver + "/v1/trigger", s3_event("landing", "daily/sales+2024.csv", "e0f1"))
    assert status == 202 and name in text and "duplicate" in text.lower()
    assert len(await client.list(kube.CRAWLJOBS, namespace)) == 1


@requires_modules(RECEIVER, OPERATOR, WORKER)
async def test_event_to_succeeded_crawljob_with_result(
    client: kube.KubeClient,
    namespace: str,
    receiver: str,
    operator: Callable[..., Child],
    kubelet: Child,
    s3_client: Any,
    bucket: str,
) -> None:
    etag = upload_csv(s3_client, bucket, "in/orders 1.csv")
    kubelet.start()
    operator()
    status, _ = post_json(receiver + "/v1/trigger", s3_event(bucket, "in/orders+1.csv", etag))
    assert status == 202
    name, _ = crawljob_for(bucket, "in/orders 1.csv", etag, namespace)

    done = await wait_phase(client, namespace, name, "Succeeded")
    result = done["status"]["result"]
    assert result["rowsRead"] == ROWS and result["rowsWritten"] == ROWS and result["rowsRejected"] == 0
    assert result["outputUri"].startswith("s3://")
    assert done["status"]["jobName"] == name

    # What the real controllers did on the way.
    job = await client.get(kube.JOBS, namespace, name)
    assert condition(job, "Complete")
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("CrawlJob", done["metadata"]["uid"], True)
    [pod] = await job_pods(client, namespace, name)
    summary = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert summary["outcome"] == "Succeeded" and summary["rowsWritten"] == ROWS

    output_bucket, _, prefix = result["outputUri"].removeprefix("s3://").partition("/")
    listed = s3_client.list_objects_v2(Bucket=output_bucket, Prefix=prefix)
    assert any(item["Key"].endswith("_manifest.json") for item in listed.get("Contents", []))


@requires_modules(OPERATOR)
async def test_deleting_a_running_crawljob_cancels_its_job_and_pod(
    client: kube.KubeClient,
    namespace: str,
    operator: Callable[..., Child],
    kubelet: Child,
    kubectl: Callable[..., str],
) -> None:
    marker = f"crawljob-test-{uuid.uuid4().hex}"
    command = [sys.executable, "-c", f"import time  # {marker}\ntime.sleep(600)"]
    kubelet.start()
    operator(CRAWLJOB_WORKER_COMMAND=json.dumps(command))
    name, body = crawljob_for("landing", "slow.csv", "s1", namespace)
    await client.create(kube.CRAWLJOBS, namespace, body)
    await wait_phase(client, namespace, name, "Running")

    async def worker_runs() -> bool:
        return bool(processes_with(marker))

    await wait_for(worker_runs, timeout=60, what="the worker process to start")
    kubectl("delete", "crawljob", name, "--wait=false")

    async def cancelled() -> bool:
        try:
            await client.get(kube.JOBS, namespace, name)
            return False
        except kube.NotFound:
            return not await job_pods(client, namespace, name) and not processes_with(marker)

    await wait_for(cancelled, timeout=90, what="the Job, its Pod and the worker process to go")


@requires_modules(OPERATOR, WORKER)
async def test_operator_restart_adopts_the_job_despite_concurrent_writes(
    client: kube.KubeClient,
    namespace: str,
    operator: Callable[..., Child],
    kubelet: Child,
    s3_client: Any,
    bucket: str,
) -> None:
    etag = upload_csv(s3_client, bucket, "restart.csv")
    name, body = crawljob_for(bucket, "restart.csv", etag, namespace)
    first = operator()  # the kubelet is held back: the Job's Pod stays Pending
    created = await client.create(kube.CRAWLJOBS, namespace, body)

    async def job_made() -> Any:
        try:
            return await client.get(kube.JOBS, namespace, name)
        except kube.NotFound:
            return None

    job = await wait_for(job_made, timeout=60, what="the operator to create the Job")
    first.stop(signal.SIGKILL)  # a crash: no cleanup, no goodbye

    # While it is down, someone else writes the CrawlJob: the resourceVersion the operator last saw
    # is now stale, and a write based on it is refused by the real server.
    current = await client.get(kube.CRAWLJOBS, namespace, name)
    current["metadata"].setdefault("annotations", {})["example.com/touched"] = "yes"
    await client.request("PUT", kube.CRAWLJOBS.path(namespace, name), current)
    stale = {**created, "metadata": {**created["metadata"], "annotations": {"example.com/stale": "yes"}}}
    try:
        await client.request("PUT", kube.CRAWLJOBS.path(namespace, name), stale)
        raise AssertionError("a stale resourceVersion was accepted")
    except kube.Conflict:
        pass

    operator()
    kubelet.start()
    done = await wait_phase(client, namespace, name, "Succeeded")
    assert done["status"]["result"]["rowsWritten"] == ROWS
    jobs = await client.list(kube.JOBS, namespace, labels={resource.LABEL_CRAWLJOB: name})
    assert [item["metadata"]["uid"] for item in jobs] == [job["metadata"]["uid"]]  # adopted, not remade
    assert len(await job_pods(client, namespace, name)) == 1
    assert done["metadata"]["annotations"]["example.com/touched"] == "yes"


@requires_modules(OPERATOR)
async def test_a_sharded_crawljob_runs_as_one_pod_on_a_server_without_indexed_jobs(
    client: kube.KubeClient,
    namespace: str,
    operator: Callable[..., Child],
    kubelet: Child,
    s3_client: Any,
    bucket: str,
) -> None:
    etag = upload_csv(s3_client, bucket, "in/sharded.csv")
    kubelet.start()
    operator()
    name, body = crawljob_for(bucket, "in/sharded.csv", etag, namespace)
    body["spec"]["shards"] = 3  # type: ignore[index]
    await client.create(kube.CRAWLJOBS, namespace, body)

    done = await wait_phase(client, namespace, name, "Succeeded")
    assert done["status"]["result"]["rowsRead"] == ROWS
    job = await client.get(kube.JOBS, namespace, name)
    assert job["spec"]["completions"] == 1 and job["spec"].get("completionMode", "NonIndexed") == "NonIndexed"
    assert "--shards" not in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert len(await job_pods(client, namespace, name)) == 1
