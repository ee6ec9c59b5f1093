"""Cancel that keeps the record (crawljob.io/cancel), and Superseded: the operator process against the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crawljob import kube, resource
from crawljob.local.emulator import Emulator
from fakes.stack import (
    NAMESPACE,
    crawljob,
    events_of,
    running_operator,
    running_runner,
    wait_phase,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


async def _annotate(client: kube.KubeClient, name: str, key: str, value: str) -> None:
    await client.patch(kube.CRAWLJOBS, NAMESPACE, name, {"metadata": {"annotations": {key: value}}})


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(item for item in body["status"]["conditions"] if item["type"] == type_)


async def test_cancel_annotation_stops_a_running_and_a_queued_crawljob_and_rerun_starts_again(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    running_body = crawljob("cancel/slow_sleep-60.csv")
    queued_body = crawljob("cancel/later_ok-5.csv")
    running, queued = running_body["metadata"]["name"], queued_body["metadata"]["name"]
    async with (
        running_runner(kube_client, {"FAKE_WORKER_STATE": str(tmp_path)}),
        running_operator(emulator[1], tmp_path / "op.log", **{"max-active": 1}),
    ):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, running_body)
        await wait_phase(kube_client, running, {"Running"})
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, queued_body)
        await wait_phase(kube_client, queued, {"Queued"})

        # A queued CrawlJob leaves the queue; no Job is ever made for it.
        await _annotate(kube_client, queued, "crawljob.io/cancel", "true")
        cancelled_queued = await wait_phase(kube_client, queued, {"Cancelled", "Succeeded", "Failed"})

        # A running one: its Job and Pods are deleted, the record stays.
        assert await kube_client.list(kube.PODS, NAMESPACE, {"job-name": running})
        await _annotate(kube_client, running, "crawljob.io/cancel", "wrong input file")
        cancelled_running = await wait_phase(kube_client, running, {"Cancelled", "Succeeded", "Failed"})

        async def job_and_pods_gone() -> bool:
            job_names = {job["metadata"]["name"] for job in await kube_client.list(kube.JOBS, NAMESPACE)}
            pods = await kube_client.list(kube.PODS, NAMESPACE, {"job-name": running})
            return running not in job_names and not pods

        await wait_until(job_and_pods_gone, 20, "the cancelled Job and its Pods deleted")
        queued_job_made = any(
            job["metadata"]["name"] == queued for job in await kube_client.list(kube.JOBS, NAMESPACE)
        )

        # A re-run of the cancelled queued CrawlJob runs it (the slot is free now); the cancel
        # annotation, already acted on, does not cancel the new run.
        await _annotate(kube_client, queued, "crawljob.io/rerun", "after-cancel")

        async def rerun_done() -> dict[str, Any] | None:
            got = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, queued)
            status = got.get("status") or {}
            return got if status.get("run") == 2 and status.get("phase") in resource.TERMINAL_PHASES else None

        rerun = await wait_until(rerun_done, 30, "re-run of the cancelled CrawlJob finished")
        running_events = await events_of(kube_client, running)
        queued_events = await events_of(kube_client, queued)
        still_there = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, running)

    status = cancelled_running["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "Cancelled"), status
    assert "cancelled: wrong input file" in status["message"]
    assert f"Job {running} and its pods were deleted" in status["message"]
    assert status["completionTime"] and status["startTime"]
    assert _condition(cancelled_running, "Cancelled")["status"] == "True"
    assert _condition(cancelled_running, "Running")["status"] == "False"
    assert any(event["reason"] == "Cancelled" for event in running_events), running_events
    assert still_there["status"]["phase"] == "Cancelled"  # the record is kept
    runs = (tmp_path / "runs.log").read_text().split()
    assert runs.count(running) == 1  # not restarted by the Job controller

    status = cancelled_queued["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "Cancelled"), status
    assert "it had not started" in status["message"]
    assert not queued_job_made
    assert _condition(cancelled_queued, "Queued")["status"] == "False"

    assert rerun["status"]["phase"] == "Succeeded", rerun["status"]
    assert rerun["status"]["result"]["rowsRead"] == 5
    assert _condition(rerun, "Cancelled")["status"] == "False"
    reasons = [event["reason"] for event in queued_events]
    assert "Cancelled" in reasons and "Rerun" in reasons and "Completed" in reasons


async def test_an_older_event_waiting_in_the_queue_is_superseded_while_a_running_one_finishes(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    def versioned(sequencer: str) -> dict[str, Any]:
        ref = resource.ObjectRef(bucket="bucket", key="sup/data_sleep-1_ok-3.csv", sequencer=sequencer)
        return resource.crawljob_manifest(ref, NAMESPACE)

    first, late_old, newest = versioned("0A"), versioned("09"), versioned("00B")
    names = {
        label: body["metadata"]["name"]
        for label, body in (("first", first), ("old", late_old), ("new", newest))
    }
    assert len(set(names.values())) == 3
    async with (
        running_runner(kube_client),
        running_operator(emulator[1], tmp_path / "op.log", **{"max-active": 1}),
    ):
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, first)
        await wait_phase(kube_client, names["first"], {"Running", "Succeeded"})
        # While it runs: an older event arrives late, and a newer one ("00B" > "0A" after padding).
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, late_old)
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, newest)
        old_done = await wait_phase(kube_client, names["old"], {"Superseded", "Succeeded", "Failed"})
        first_done = await wait_phase(kube_client, names["first"], {"Superseded", "Succeeded", "Failed"})
        new_done = await wait_phase(kube_client, names["new"], {"Superseded", "Succeeded", "Failed"})
        job_names = {job["metadata"]["name"] for job in await kube_client.list(kube.JOBS, NAMESPACE)}
        old_events = await events_of(kube_client, names["old"])

    status = old_done["status"]
    assert (status["phase"], status["reason"]) == ("Superseded", "Superseded"), status
    assert f"CrawlJob {names['new']} is a newer event" in status["message"]
    assert status["completionTime"]
    assert _condition(old_done, "Superseded")["status"] == "True"
    assert any(event["reason"] == "Superseded" for event in old_events), old_events
    assert names["old"] not in job_names  # never run
    # The one already running when newer events arrived was left to finish; the newest ran too.
    assert first_done["status"]["phase"] == "Succeeded"
    assert new_done["status"]["phase"] == "Succeeded"
    assert new_done["status"]["result"]["rowsRead"] == 3
