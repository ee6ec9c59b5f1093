"""The operator (a real `crawljob operator` process) against the emulator, with the local job runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawljob_operator import kube
from crawljob_operator.local.emulator import Emulator
from fakes.stack import NAMESPACE, crawljob, running_operator, running_runner, wait_phase

pytestmark = pytest.mark.timeout(120)


async def test_crawljob_runs_to_succeeded_with_the_workers_result(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    body = crawljob("in/ok-42.csv")
    name = body["metadata"]["name"]
    async with running_runner(kube_client), running_operator(emulator[1], tmp_path / "operator.log"):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        done = await wait_phase(kube_client, name, {"Succeeded", "Failed"})
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"]["rowsRead"] == 42
    assert status["jobName"] == name
    assert status["attempts"] == 1
    job = await kube_client.get(kube.JOBS, NAMESPACE, name)
    assert job["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
