"""The receiver app on the emulator, for tests that talk HTTP to it (aiohttp's test client)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from crawljob.receiver.app import create_app
from crawljob.receiver.settings import ReceiverSettings

RECEIVER_NAMESPACE = "crawl"  # where the `make_receiver` fixture's receiver creates CrawlJobs
MakeReceiver = Callable[..., Awaitable[TestClient[Any, Any]]]


def receiver_factory(kube_server: str, aiohttp_client: Any) -> MakeReceiver:
    """make(**overrides): a receiver (ReceiverSettings with *overrides*) served by *aiohttp_client*."""

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        settings = ReceiverSettings(kube_server=kube_server, namespace=RECEIVER_NAMESPACE, **overrides)
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        return client

    return make
