"""An API emulator that records every request it answers (time, method, path, User-Agent, body):
tests assert on this request log rather than on samples."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock

from crawljob.local.emulator import Emulator, register_crawljob_crd, register_peering_crds
from crawljob.operator import peering


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic()
    method: str
    path: str
    user_agent: str
    data: Any = None  # the parsed body (a created object, a patch)

    @property
    def is_write(self) -> bool:
        return self.method in {"POST", "PUT", "PATCH", "DELETE"}

    @property
    def is_peering(self) -> bool:
        return f"/{peering.GROUP}/" in self.path


@attrs.define(kw_only=True)
class RecordingEmulator(Emulator):
    """The emulator, keeping (time, method, path, user agent) of every request it answers."""

    calls: list[Call] = attrs.field(factory=list)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        method = str(getattr(request.method, "value", request.method)).upper()
        user_agent = str(request.headers.get("User-Agent", ""))
        self.calls.append(Call(time.monotonic(), method, str(request.url.path), user_agent, request.data))
        return await super()._handle(request)

    def writes_by(self, identity: str, since: float = 0.0) -> list[Call]:
        """Writes (other than peering keep-alives) the operator replica *identity* made."""
        return [call for call in self.calls_by(identity, since) if call.is_write and not call.is_peering]

    def calls_by(self, identity: str, since: float = 0.0) -> list[Call]:
        """Every request the operator replica *identity* made (through its own API client)."""
        agent = f"crawljob-operator ({identity})"
        return [call for call in self.calls if call.at >= since and call.user_agent == agent]


@asynccontextmanager
async def recording_emulator() -> AsyncIterator[tuple[RecordingEmulator, str]]:
    emulator = RecordingEmulator()
    emulator.resources.load_bundled()
    register_crawljob_crd(emulator)
    register_peering_crds(emulator)
    async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
        yield emulator, str(server.url).rstrip("/")
