"""Completion signal: a small aiohttp sink gets one CloudEvent per terminal phase from a real
`crawljob operator` process, across a SIGKILL and restart of the operator (duplicates only with the
same id), with retries and a Warning Event while the sink fails."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import pytest
from cloudevents.core.bindings import http as cloudevents_http

from crawljob import kube
from crawljob.local.emulator import Emulator
from crawljob.local.s3 import free_port
from crawljob.operator import completion
from fakes.stack import NAMESPACE, OperatorProcess, crawljob, running_runner, wait_phase, wait_until

pytestmark = pytest.mark.timeout(180)


@dataclass
class Sink:
    """Records every POST; answers 503 while *failing*."""

    url: str = ""
    failing: bool = False
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        message = cloudevents_http.HTTPMessage(dict(request.headers), await request.read())
        event = cloudevents_http.from_http_event(message)  # a valid structured CloudEvent, or a 500
        assert request.content_type == "application/cloudevents+json"  # structured mode
        attributes = {
            "id": event.get_id(),
            "type": event.get_type(),
            "source": event.get_source(),
            "specversion": event.get_specversion(),
            "subject": event.get_subject(),
        }
        if self.failing:
            self.refused[attributes["id"]] += 1
            return aiohttp.web.Response(status=503)
        self.accepted.append({**attributes, "data": event.get_data()})
        return aiohttp.web.Response(status=202)


@pytest.fixture
async def sinks() -> AsyncIterator[tuple[Sink, Sink]]:
    """Two sinks on loopback: the operator's (fails at first) and one a CrawlJob names itself."""
    shared, own = Sink(failing=True), Sink()
    app = aiohttp.web.Application()
    app.router.add_post("/shared", shared.handle)
    app.router.add_post("/own", own.handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    shared.url, own.url = f"http://127.0.0.1:{port}/shared", f"http://127.0.0.1:{port}/own"
    yield shared, own
    await runner.cleanup()


async def test_one_cloudevent_per_terminal_phase_across_an_operator_restart(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path, sinks: tuple[Sink, Sink]
) -> None:
    shared, own = sinks
    ok = crawljob("done/ok-7.csv")
    bad = crawljob("done/exit-3.csv", backoffLimit=0)
    mine = crawljob("done/mine_ok-2.csv", notify={"sinks": [own.url]})
    flags = {"notify-sinks": shared.url, "notify-retry-seconds": "0.2"}
    operator = OperatorProcess(emulator[1], tmp_path / "operator.log", **flags)
    async with running_runner(kube_client):
        await operator.start()
        try:
            for body in (ok, bad, mine):
                await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
            done = {
                body["metadata"]["name"]: await wait_phase(
                    kube_client, body["metadata"]["name"], {"Succeeded", "Failed"}
                )
                for body in (ok, bad, mine)
            }
            ids = {name: completion.event_id(item) for name, item in done.items()}
            # The CrawlJob's own sink acknowledges its event (recorded in its status) ...
            await wait_until(lambda: asyncio.sleep(0, len(own.accepted) == 1), 20, "the own sink's event")

            async def recorded(name: str) -> bool:
                status = (await kube_client.get(kube.CRAWLJOBS, NAMESPACE, name))["status"]
                return any(item["id"] == ids[name] for item in status.get("notifications") or [])

            await wait_until(lambda: recorded(mine["metadata"]["name"]), 20, "the delivery recorded")

            # ... while the operator's sink refuses: retried with backoff, then a Warning Event.
            async def warned() -> bool:
                events = await kube_client.list(kube.EVENTS, NAMESPACE)
                return {
                    e["involvedObject"]["name"] for e in events if e["reason"] == "NotificationFailing"
                } >= {ok["metadata"]["name"], bad["metadata"]["name"]}

            await wait_until(warned, 30, "NotificationFailing Warning Events")
        finally:
            await operator.kill()  # SIGKILL: nothing is flushed
        assert all(shared.refused[ids[name]] >= completion.WARN_AFTER_FAILURES for name in ids), (
            shared.refused
        )
        shared.failing = False
        await operator.start()  # the restarted operator owes what was never acknowledged
        try:

            async def all_delivered() -> bool:
                return {event["id"] for event in shared.accepted} == set(ids.values())

            await wait_until(all_delivered, 30, "every event delivered after the restart")
            await asyncio.sleep(2)  # a few more passes: nothing is sent twice once recorded
        finally:
            await operator.stop()
    assert Counter(event["id"] for event in shared.accepted) == Counter(set(ids.values()))
    assert [event["id"] for event in own.accepted] == [ids[mine["metadata"]["name"]]]
    by_id = {event["id"]: event for event in shared.accepted}
    succeeded = by_id[ids[ok["metadata"]["name"]]]
    assert succeeded["type"] == "io.crawljob.crawljob.succeeded" and succeeded["specversion"] == "1.0"
    assert (
        succeeded["source"]
        == f"/apis/crawljob.io/v1alpha1/namespaces/{NAMESPACE}/crawljobs/{ok['metadata']['name']}"
    )
    assert succeeded["data"]["result"]["rowsWritten"] == 7
    failed = by_id[ids[bad["metadata"]["name"]]]
    assert failed["type"] == "io.crawljob.crawljob.failed" and failed["data"]["reason"] == "BadInput"
    assert ids[ok["metadata"]["name"]] == f"{done[ok['metadata']['name']]['metadata']['uid']}.1.succeeded"
