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
from crawljob.operator import jobs
from fakes.waiting import wait_for

from .conftest import BIN, Child, requires_modules
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


# The worker, wrapped: a shard named in KILL_ONCE is SIGKILLed mid-way on its first attempt (the
# real worker has started on it), a shard named in FAIL always exits 3 (bad input); every other run
# is the real worker.
WORKER_WRAPPER = """
import os, signal, subprocess, sys, time
args = sys.argv[1:]
shard = args[args.index("--shard-index") + 1] if "--shard-index" in args else ""
run = os.environ["CRAWLJOB_NAME"] + "#" + shard
if run in FAIL:
    sys.exit(3)
if run in KILL_ONCE and not os.path.exists(os.path.join(STATE, run)):
    open(os.path.join(STATE, run), "w").close()
    worker = subprocess.Popen([WORKER, *args])
    time.sleep(1.5)
    worker.kill()
    os.kill(os.getpid(), signal.SIGKILL)
os.execv(WORKER, [WORKER, *args])
"""


def quoted_csv(rows: int) -> bytes:
    """A few MB with quoted fields holding commas and line ends (a shard boundary may fall in one)."""
    lines = ["id,amount,note"]
    for number in range(rows):
        note = f'"first line, {number}\nsecond ""line"""' if number % 3 == 0 else f"plain {number}"
        lines.append(f"{number},{number / 4},{note}")
    return ("\n".join(lines) + "\n").encode()


def output_of(s3_client: Any, uri: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """The `_manifest.json` under *uri* and the sorted rows of the Parquet parts it lists."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=prefix + "_manifest.json")["Body"].read())
    tables = [
        pq.read_table(
            io.BytesIO(
                s3_client.get_object(Bucket=bucket, Key=part["uri"].split(f"s3://{bucket}/", 1)[1])[
                    "Body"
                ].read()
            )
        )
        for part in manifest["parts"]
    ]
    table = pa.concat_tables(tables)
    return manifest, sorted(
        zip(*(table.column(name).to_pylist() for name in table.column_names), strict=True)
    )


@requires_modules(OPERATOR, WORKER)
async def test_a_sharded_crawljob_runs_one_job_per_shard_on_a_server_without_indexed_jobs(
    client: kube.KubeClient,
    namespace: str,
    operator: Callable[..., Child],
    kubelet: Child,
    s3_client: Any,
    bucket: str,
    tmp_path: Any,
) -> None:
    data = quoted_csv(60_000)  # ~2.3 MB
    s3_client.put_object(Bucket=bucket, Key="in/big.csv", Body=data)
    wrapper = tmp_path / "worker.py"
    wrapper.write_text(
        f"FAIL = {{'fail-shards#2'}}\nKILL_ONCE = {{'three-shards#1'}}\nSTATE = {str(tmp_path)!r}\n"
        f"WORKER = {str(BIN / 'crawljob-worker')!r}\n" + WORKER_WRAPPER
    )
    kubelet.start()
    operator(CRAWLJOB_WORKER_COMMAND=json.dumps([sys.executable, str(wrapper)]))

    def body(name: str, **spec: Any) -> dict[str, Any]:
        ref = resource.ObjectRef(bucket=bucket, key="in/big.csv", etag=name)
        manifest: dict[str, Any] = resource.crawljob_manifest(ref, namespace)
        manifest["metadata"]["name"] = name
        manifest["spec"].update(output={"uri": f"s3://{bucket}/out/{name}/"}, **spec)
        return manifest

    for item in (
        body("one-shard"),
        body("three-shards", shards=3),
        body("fail-shards", shards=3, backoffLimit=0),
    ):
        await client.create(kube.CRAWLJOBS, namespace, item)
    one = await wait_phase(client, namespace, "one-shard", "Succeeded")
    three = await wait_phase(client, namespace, "three-shards", "Succeeded", timeout=180)
    failed = await wait_phase(client, namespace, "fail-shards", "Failed")

    # Three Jobs, one per shard, made by the operator and run by the real 1.20 Job controller.
    made = await client.list(kube.JOBS, namespace, labels={resource.LABEL_CRAWLJOB: "three-shards"})
    assert sorted(job["metadata"]["name"] for job in made) == [
        jobs.shard_job_name("three-shards", 1, index) for index in range(3)
    ]
    assert all(condition(job, "Complete") and job["spec"]["completions"] == 1 for job in made)
    assert three["status"]["jobName"] == jobs.shard_job_stem("three-shards", 1)
    # The killed shard was retried alone: shard 1's Job made a second pod, the others one each.
    pods = {
        index: await job_pods(client, namespace, jobs.shard_job_name("three-shards", 1, index))
        for index in range(3)
    }
    assert [len(pods[index]) for index in range(3)] == [1, 2, 1], pods
    killed = [pod["status"]["containerStatuses"][0]["state"]["terminated"] for pod in pods[1]]
    assert sorted(item["exitCode"] for item in killed) == [0, 137]
    assert three["status"]["attempts"] == 4

    # The same output as the 1-shard run: rows, and the whole object's manifest.
    one_manifest, one_rows = output_of(s3_client, one["status"]["result"]["outputUri"])
    three_manifest, three_rows = output_of(s3_client, three["status"]["result"]["outputUri"])
    assert len(one_rows) == 60_000 and three_rows == one_rows
    same = ("outcome", "source", "schema", "rowsRead", "rowsWritten", "rowsRejected")
    assert {key: three_manifest[key] for key in same} == {key: one_manifest[key] for key in same}
    assert len(three_manifest["shards"]) == 3 and "shards" not in one_manifest
    assert three["status"]["result"]["rowsWritten"] == one["status"]["result"]["rowsWritten"] == 60_000

    # A permanently failing shard fails the CrawlJob, named; no shard Job is left running.
    status = failed["status"]
    assert status["reason"] == "BackoffLimitExceeded" and status["message"].startswith("shard 2 of 3: "), (
        status
    )
    assert "exit code 3" in status["message"]

    async def none_running() -> bool:
        left = await client.list(kube.JOBS, namespace, labels={resource.LABEL_CRAWLJOB: "fail-shards"})
        return all(condition(job, "Complete") or condition(job, "Failed") for job in left)

    await wait_for(none_running, timeout=60, what="the failed run's other shard Jobs finished or deleted")
