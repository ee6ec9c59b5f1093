"""The worker in a Job shaped as docs/contracts.md says the operator makes it, on the real cluster.

The real Job controller creates the Pod, the local kubelet runs `crawljob-worker` against the local
S3, and the worker's progress patches go through the real CrawlJob status subresource and schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from crawljob import kube, resource

from .conftest import Child, Cluster, requires_modules
from .test_jobs import condition, job_pods, wait_job_condition
from .test_pipeline import ROWS, WORKER, upload_csv


def contract_job(crawljob: dict[str, Any], source: str, output: str, env: dict[str, str]) -> dict[str, Any]:
    """A Job as the operator renders it (docs/contracts.md), minus fields newer than 1.20."""
    name = crawljob["metadata"]["name"]
    namespace = crawljob["metadata"]["namespace"]
    labels = {
        resource.LABEL_NAME: "crawljob",
        resource.LABEL_MANAGED_BY: resource.MANAGED_BY,
        resource.LABEL_CRAWLJOB: name,
    }
    container_env = [
        {"name": "CRAWLJOB_NAME", "value": name},
        {"name": "CRAWLJOB_NAMESPACE", "value": namespace},
    ]
    container_env += [{"name": key, "value": value} for key, value in env.items()]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": resource.API_VERSION,
                    "kind": resource.KIND,
                    "name": name,
                    "uid": crawljob["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "worker",
                            "image": "crawljob-worker:local",
                            "command": ["crawljob-worker"],
                            "args": [source, "--output", output],
                            "env": container_env,
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                },
            },
        },
    }


@requires_modules(WORKER)
async def test_worker_job_completes_and_reports_progress_through_the_status_subresource(
    client: kube.KubeClient,
    cluster: Cluster,
    namespace: str,
    children: Any,
    api_proxy: str,
    local_s3: Any,
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    etag = upload_csv(s3_client, bucket, "worker/in.csv")
    size = s3_client.head_object(Bucket=bucket, Key="worker/in.csv")["ContentLength"]
    ref = resource.ObjectRef(bucket=bucket, key="worker/in.csv", etag=etag, size=size)
    crawljob = await client.create(kube.CRAWLJOBS, namespace, resource.crawljob_manifest(ref, namespace))
    name = crawljob["metadata"]["name"]
    output = f"s3://{bucket}/out/{name}/"
    kubelet: Child = children(
        "kubelet",
        [sys.executable, "-m", "crawljob.local.kubelet", "--namespace", namespace,
         "--workdir", str(tmp_path / "pods")],
        cluster.env(CRAWLJOB_KUBE_SERVER=api_proxy),
    )  # fmt: skip
    kubelet.start()
    await client.create(
        kube.JOBS,
        namespace,
        contract_job(crawljob, f"s3://{bucket}/worker/in.csv", output, local_s3.environment()),
    )

    done = await wait_job_condition(client, namespace, name, "Complete")
    assert condition(done, "Complete")
    [pod] = await job_pods(client, namespace, name)
    summary = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert summary["outcome"] == "Succeeded" and summary["exitCode"] == 0
    assert (summary["rowsRead"], summary["rowsWritten"], summary["rowsRejected"]) == (ROWS, ROWS, 0)
    assert summary["outputUri"].rstrip("/") == output.rstrip("/")

    progress = (await client.get(kube.CRAWLJOBS, namespace, name))["status"]["progress"]
    assert progress["bytesRead"] == size and progress["bytesTotal"] == size
    assert progress["rowsRead"] == ROWS and progress["percent"] == "100%"


@requires_modules(WORKER)
async def test_worker_bad_input_fails_the_job_with_its_exit_code_and_summary(
    client: kube.KubeClient, namespace: str, kubelet: Child, local_s3: Any, s3_client: Any, bucket: str
) -> None:
    s3_client.put_object(Bucket=bucket, Key="worker/binary.csv", Body=bytes(range(256)) * 64)
    ref = resource.ObjectRef(bucket=bucket, key="worker/binary.csv", etag="x")
    crawljob = await client.create(kube.CRAWLJOBS, namespace, resource.crawljob_manifest(ref, namespace))
    name = crawljob["metadata"]["name"]
    kubelet.start()
    body = contract_job(
        crawljob, f"s3://{bucket}/worker/binary.csv", f"s3://{bucket}/out/{name}/", local_s3.environment()
    )
    await client.create(kube.JOBS, namespace, body)

    failed = await wait_job_condition(client, namespace, name, "Failed")
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
    [pod] = await job_pods(client, namespace, name)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    summary = json.loads(terminated["message"])
    assert terminated["exitCode"] == 3 == summary["exitCode"]
    assert summary["outcome"] == "Failed" and summary["reason"] == "BadInput"


@requires_modules(WORKER)
async def test_shard_progress_conflicts_on_a_stale_read_and_sums_through_the_real_status_schema(
    client: kube.KubeClient, namespace: str, api_proxy: str
) -> None:
    import asyncio

    from crawljob_worker.kubeapi import KubeTarget, StatusWriter
    from crawljob_worker.shardprogress import ShardStatus

    ref = resource.ObjectRef(bucket="b", key="worker/sharded.csv", etag="e", size=4000)
    crawljob = await client.create(kube.CRAWLJOBS, namespace, resource.crawljob_manifest(ref, namespace))
    name = crawljob["metadata"]["name"]

    def shard(index: int) -> ShardStatus:
        writer = StatusWriter(KubeTarget(namespace, name, server=api_proxy))
        return ShardStatus(
            writer, index=index, run_id="uid-1", bytes_total=4000, now=lambda: "2026-01-01T00:00:00Z"
        )

    first, second = shard(0), shard(1)
    await asyncio.to_thread(first.send, 500, 5, final=False)
    await asyncio.to_thread(second.send, 700, 7, final=False)
    await asyncio.to_thread(first.send, 2000, 20, final=True)  # based on a read older than second's patch
    assert (first.conflicts, second.conflicts) == (1, 0)  # the real server refused the stale patch (409)
    progress = (await client.get(kube.CRAWLJOBS, namespace, name))["status"]["progress"]
    assert (progress["bytesRead"], progress["rowsRead"], progress["percent"]) == (2700, 27, "67%")
    # The structural schema keeps the per-shard entries (nothing pruned).
    assert progress["shards"]["1"] == {
        "runId": "uid-1", "bytesRead": 700, "rowsRead": 7, "updateTime": "2026-01-01T00:00:00Z",
    }  # fmt: skip
