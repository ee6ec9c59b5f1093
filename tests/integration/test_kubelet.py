"""The local kubelet against the emulator: Pods run once, status writes survive an API outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import pytest

from crawljob import kube
from crawljob.local.emulator import Emulator, register_crawljob_crd
from crawljob.local.kubelet import LocalKubelet
from crawljob.local.pods import Outcome
from fakes.stack import NAMESPACE, wait_until

pytestmark = pytest.mark.timeout(60)


@attrs.define(kw_only=True)
class OutageEmulator(Emulator):
    """The emulator, but while *down* every request except an open watch is answered 503."""

    down: bool = False
    refused: list[str] = attrs.field(factory=list)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self.down:
            self.refused.append(f"{request.method} {request.url.path}")
            return aiohttp.web.json_response(
                {"kind": "Status", "status": "Failure", "code": 503, "message": "injected outage"}, status=503
            )
        return await super()._handle(request)


@contextlib.asynccontextmanager
async def outage_emulator() -> AsyncIterator[tuple[OutageEmulator, kube.KubeClient]]:
    emulator = OutageEmulator()
    emulator.resources.load_bundled()
    register_crawljob_crd(emulator)
    async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
        connection = kube.Connection(server=str(server.url).rstrip("/"))
        async with kube.KubeClient(connection) as client:
            yield emulator, client


def pod(name: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"job-name": name}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "worker", "image": "local", "command": [sys.executable, "-c", script]}],
        },
    }


WRITE_MESSAGE = (
    "import os, time; time.sleep({}); open(os.environ['CRAWLJOB_TERMINATION_LOG'], 'w').write('done')"
)


async def test_final_status_written_during_an_api_outage_lands_when_the_api_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[tuple[str, Outcome]] = []
    async with outage_emulator() as (emulator, client):
        kubelet = LocalKubelet(
            client,
            NAMESPACE,
            tmp_path,
            on_finished=lambda namespace, name, outcome: finished.append((name, outcome)),
            status_delays=lambda attempt: 0.1,
        )
        task = asyncio.create_task(kubelet.run())
        try:
            await client.create(kube.PODS, NAMESPACE, pod("outage", WRITE_MESSAGE.format(1.5)))

            async def running() -> bool:
                body = await client.get(kube.PODS, NAMESPACE, "outage")
                return (body.get("status") or {}).get("phase") == "Running"

            await wait_until(running, 15, "the pod to run")
            with caplog.at_level(logging.WARNING, logger="crawljob.kubelet"):
                emulator.down = True  # the container exits while the API is down

                async def refused_status_writes() -> bool:
                    return sum("/pods/outage/status" in line for line in emulator.refused) >= 3

                await wait_until(refused_status_writes, 15, "status writes refused during the outage")
                assert not finished  # nobody was told the Pod ended: its status is not written yet
                emulator.down = False

                async def succeeded() -> dict[str, Any] | None:
                    body = await client.get(kube.PODS, NAMESPACE, "outage")
                    return body if (body.get("status") or {}).get("phase") == "Succeeded" else None

                body = await wait_until(succeeded, 15, "the final status after the outage")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    terminated = body["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (0, "Completed", "done")
    assert finished == [("outage", Outcome(0, "Completed", "done"))]
    retries = [
        r.getMessage() for r in caplog.records if "writing its status (Succeeded) failed" in r.getMessage()
    ]
    assert len(retries) >= 3 and "retrying in 0.1s" in retries[0]


async def test_a_missing_secret_keeps_the_pod_pending_until_it_exists(tmp_path: Path) -> None:
    body = pod("needs-secret", "import os; assert os.environ['TOKEN'] == 'sesame'")
    body["spec"]["containers"][0]["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
    ]
    async with outage_emulator() as (_, client):
        task = asyncio.create_task(LocalKubelet(client, NAMESPACE, tmp_path).run())
        try:
            await client.create(kube.PODS, NAMESPACE, body)

            async def waiting() -> dict[str, Any] | None:
                status = (await client.get(kube.PODS, NAMESPACE, "needs-secret")).get("status") or {}
                states = status.get("containerStatuses") or [{}]
                return states[0].get("state", {}).get("waiting") if status.get("phase") == "Pending" else None

            reason = await wait_until(waiting, 15, "the pod to wait for its Secret")
            assert reason == {"reason": "CreateContainerConfigError", "message": 'secret "creds" not found'}
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds", "namespace": NAMESPACE},
                "data": {"token": "c2VzYW1l"},
            }
            await client.create(kube.Resource("", "v1", "secrets"), NAMESPACE, secret)

            async def succeeded() -> bool:
                status = (await client.get(kube.PODS, NAMESPACE, "needs-secret")).get("status") or {}
                return status.get("phase") == "Succeeded"

            await wait_until(succeeded, 20, "the pod to run once its Secret exists")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
