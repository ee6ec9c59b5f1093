"""A Kubernetes API emulator that fails or delays CrawlJob creates on purpose (receiver tests).

Faults are decided per create by a *plan* function of the posted body, so tests stay
deterministic (seeded) and can tell apart the three hazards a receiver must survive:
- refused before storing (500/503): the CrawlJob does not exist;
- stored, then answered with an error: it exists, but the receiver was told otherwise;
- slow: answered after a delay, possibly after the receiver gave up (stored all the same).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock

from crawljob.local.emulator import Emulator, register_crawljob_crd


@dataclass(frozen=True)
class Fault:
    delay: float = 0.0
    before: int | None = None  # answer this status without storing
    after: int | None = None  # store, then answer this status


NO_FAULT = Fault()


def _status(code: int) -> aiohttp.web.Response:
    return aiohttp.web.json_response(
        {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": code,
            "message": "injected fault",
        },
        status=code,
    )


@attrs.define(kw_only=True)
class ForgetfulEmulator(Emulator):
    """The project's emulator, made O(1) per create for storms of thousands of objects.

    kmock records every request and matches each new one by scanning that history, so a create
    costs O(requests so far): ~40 ms after 200 creates, ~450 ms after 1,200 here. Each request is
    forgotten once answered. And kmock answers a create by scanning every stored object for the
    new one; here it is looked up by its key (kmock has already stored it in `_handle`).
    """

    async def _serve_create(self, request: kmock.Request) -> Any:
        metadata = request.data.get("metadata", {})
        key = (request.resource, request.namespace or metadata.get("namespace"), metadata.get("name"))
        async with self._lock:
            return self._objects[key].raw

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        try:
            return await super()._handle(request)
        finally:
            self._forget(request)

    def _forget(self, request: kmock.Request) -> None:
        with contextlib.suppress(ValueError):
            self._requests.remove(request)


@attrs.define(kw_only=True)
class FaultyEmulator(ForgetfulEmulator):
    """The project's emulator with a fault plan for CrawlJob creates."""

    plan: Callable[[dict[str, Any]], Fault] = lambda body: NO_FAULT
    # The status every read of one CrawlJob answers, or None: 500 is an apiserver whose etcd read
    # fails at once (whose dry-run creates still answer 201, see crawljob/receiver/readiness.py).
    read_fault: int | None = None
    in_flight: int = 0
    injected: dict[str, int] = attrs.field(factory=dict)
    _tasks: set[asyncio.Task[Any]] = attrs.field(factory=set)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if (
            self.read_fault is not None
            and request.action == kmock.action.FETCH
            and getattr(resource, "plural", None) == "crawljobs"
        ):
            self._count(f"read-{self.read_fault}")
            return _status(self.read_fault)
        if (
            request.action != kmock.action.CREATE
            or resource is None
            or getattr(resource, "plural", None) != "crawljobs"
            or not isinstance(request.data, dict)
        ):
            return await super()._handle(request)
        fault = self.plan(request.data)
        # Shielded: like an API server, the create goes on when the client stops waiting.
        task = asyncio.create_task(self._faulty(request, fault))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _faulty(self, request: kmock.Request, fault: Fault) -> aiohttp.web.StreamResponse:
        self.in_flight += 1
        try:
            if fault.delay:
                self._count("delayed")
                await asyncio.sleep(fault.delay)
            if fault.before is not None:
                self._count(f"failed-before-store-{fault.before}")
                return _status(fault.before)
            response = await super()._handle(request)
            if fault.after is not None and response.status < 400:
                self._count(f"failed-after-store-{fault.after}")
                return _status(fault.after)
            return response
        finally:
            self.in_flight -= 1
            self._forget(request)

    def _count(self, what: str) -> None:
        self.injected[what] = self.injected.get(what, 0) + 1


@asynccontextmanager
async def serve_faulty_emulator(
    plan: Callable[[dict[str, Any]], Fault],
) -> AsyncIterator[tuple[FaultyEmulator, str]]:
    """Run a FaultyEmulator (built-ins + the CrawlJob CRD) on loopback; yields it and its URL."""
    emulator = FaultyEmulator(plan=plan)
    emulator.resources.load_bundled()
    register_crawljob_crd(emulator)
    async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
        yield emulator, str(server.url).rstrip("/")
