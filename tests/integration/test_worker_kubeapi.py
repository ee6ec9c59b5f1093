"""The worker's status.progress patches through the kubernetes package, against the emulator over HTTP(S).

In a cluster the worker finds the API the way every pod does: KUBERNETES_SERVICE_HOST/PORT, and the
service account's token and CA in a directory. Here the emulator is served over TLS by a certificate of
a throwaway CA (trustme), and that directory is a temporary one holding the CA, a token and a namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp.web
import kmock
import pytest
import trustme

from crawljob import kube, resource
from crawljob.local.emulator import Emulator
from crawljob_worker.kubeapi import KubeTarget, PatchFailed, StatusWriter, kube_target
from crawljob_worker.report import Progress
from crawljob_worker.shardprogress import ShardStatus

TOKEN = "service-account-token-1"


@dataclass(frozen=True)
class TlsApi:
    emulator: Emulator
    port: int
    service_account_dir: Path


@pytest.fixture
async def tls_api(emulator: tuple[Emulator, str], tmp_path: Path) -> AsyncIterator[TlsApi]:
    """The emulator also served over TLS on loopback, and a service-account directory that trusts it."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    runner = aiohttp.web.ServerRunner(aiohttp.web.Server(emulator[0]))
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    (directory / "token").write_text(TOKEN)  # as the kubelet writes it: no newline
    (directory / "namespace").write_text("jobs\n")
    emulator[0].trim_request_log = False  # the test reads the request log
    try:
        yield TlsApi(emulator[0], runner.addresses[0][1], directory)
    finally:
        await runner.cleanup()


async def create_crawljob(client: kube.KubeClient, namespace: str, name: str) -> None:
    await client.create(
        kube.CRAWLJOBS, namespace,
        {"apiVersion": resource.API_VERSION, "kind": resource.KIND,
         "metadata": {"name": name, "namespace": namespace}, "spec": {"bucket": "b", "key": "k.csv"}},
    )  # fmt: skip


async def test_in_cluster_progress_reaches_the_crawljob_with_the_service_account_token(
    tls_api: TlsApi, kube_client: kube.KubeClient
) -> None:
    await create_crawljob(kube_client, "jobs", "in-cluster")
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(tls_api.port)}
    target = kube_target(
        "in-cluster", None, None, environ, service_account_dir=str(tls_api.service_account_dir)
    )
    assert target is not None and target.namespace == "jobs"
    progress = Progress(1000, 60.0, target)
    # The final report waits for its patch: off the event loop, which serves the emulator.
    await asyncio.to_thread(progress.update, 1000, 42, final=True)
    assert (progress.patches_sent, progress.patch_errors) == (1, 0)
    stored = await kube_client.get(kube.CRAWLJOBS, "jobs", "in-cluster")
    assert stored["status"]["progress"]["rowsRead"] == 42
    assert stored["status"]["progress"]["percent"] == "100%"
    patches = [request for request in tls_api.emulator if request.method == kmock.method.PATCH]
    assert [request.url.path for request in patches] == [
        "/apis/crawljob.io/v1alpha1/namespaces/jobs/crawljobs/in-cluster/status"
    ]
    assert patches[0].headers["Authorization"].lower() == f"bearer {TOKEN}"
    assert patches[0].headers["Content-Type"] == "application/merge-patch+json"


async def test_a_server_the_ca_does_not_vouch_for_is_a_patch_failure(
    tls_api: TlsApi, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    await create_crawljob(kube_client, "jobs", "untrusted")
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    trustme.CA().cert_pem.write_to_path(str(other_ca / "ca.crt"))
    (other_ca / "token").write_text(TOKEN)
    target = KubeTarget("jobs", "untrusted", service_host="127.0.0.1", service_port=str(tls_api.port),
                        service_account_dir=str(other_ca))  # fmt: skip
    with pytest.raises(PatchFailed, match=r"SSL|certificate"):
        await asyncio.to_thread(StatusWriter(target).patch, {"status": {"progress": {"rowsRead": 1}}})
    assert "status" not in await kube_client.get(kube.CRAWLJOBS, "jobs", "untrusted")


async def test_a_missing_crawljob_is_a_patch_failure_naming_the_status(
    emulator: tuple[Emulator, str],
) -> None:
    writer = StatusWriter(KubeTarget("jobs", "gone", server=emulator[1]))
    with pytest.raises(PatchFailed, match="HTTP 404"):
        await asyncio.to_thread(writer.patch, {"status": {"progress": {"rowsRead": 1}}})


async def test_without_service_account_credentials_the_worker_does_not_report(tmp_path: Path) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert kube_target("cj", None, None, environ, service_account_dir=str(tmp_path)) is None


def shard_status(server: str, name: str, index: int, total: int = 4000) -> ShardStatus:
    writer = StatusWriter(KubeTarget("jobs", name, server=server))
    return ShardStatus(
        writer, index=index, run_id="uid-1", bytes_total=total, now=lambda: "2026-01-01T00:00:00Z"
    )


async def test_a_shard_report_based_on_a_stale_read_conflicts_and_is_recomputed(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient
) -> None:
    await create_crawljob(kube_client, "jobs", "sharded")
    first, second = shard_status(emulator[1], "sharded", 0), shard_status(emulator[1], "sharded", 1)
    await asyncio.to_thread(first.send, 500, 5, final=False)
    await asyncio.to_thread(second.send, 700, 7, final=False)  # the CrawlJob changed since first's patch
    await asyncio.to_thread(first.send, 2000, 20, final=True)
    assert (first.conflicts, second.conflicts) == (1, 0)
    progress = (await kube_client.get(kube.CRAWLJOBS, "jobs", "sharded"))["status"]["progress"]
    # Without the precondition, first's patch would have summed 2000 + its stale view of shard 1 (none).
    assert (progress["bytesRead"], progress["rowsRead"], progress["percent"]) == (2700, 27, "67%")
    assert {key: item["bytesRead"] for key, item in progress["shards"].items()} == {"0": 2000, "1": 700}


async def test_shards_reporting_at_once_end_with_every_entry_and_the_sums(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient
) -> None:
    await create_crawljob(kube_client, "jobs", "together")
    shards = 4
    senders = [shard_status(emulator[1], "together", index) for index in range(shards)]
    barrier = threading.Barrier(shards)

    def report(sender: ShardStatus) -> None:
        for step in range(1, 5):
            barrier.wait()
            with contextlib.suppress(PatchFailed):  # a periodic report may give up: the next comes later
                sender.send(250 * step, 10 * step, final=False)
        barrier.wait()
        sender.send(1000, 40, final=True)  # the final one must land

    await asyncio.gather(*(asyncio.to_thread(report, sender) for sender in senders))
    progress = (await kube_client.get(kube.CRAWLJOBS, "jobs", "together"))["status"]["progress"]
    assert (progress["bytesRead"], progress["rowsRead"], progress["bytesTotal"]) == (4000, 160, 4000)
    assert progress["percent"] == "100%" and sorted(progress["shards"]) == ["0", "1", "2", "3"]
