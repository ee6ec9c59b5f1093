"""An HTTPS proxy in front of the real apiserver that plays a faulty load balancer (fault tier).

It terminates TLS with the apiserver's own certificate (so clients verify it against the cluster CA
as usual), passes the client's bearer token on, and forwards to the apiserver. Modes:

- `fail()`: every request answers 503 (a kube-apiserver Status), and open watch streams are cut,
  like a load balancer with no healthy backend.
- `freeze()`: every watch stream, open or opened meanwhile, stops delivering data without being
  closed (a stuck connection); other requests pass. `heal()` lets new streams flow; frozen ones
  stay frozen until their client gives up on them.

It runs its own event loop in a thread, so the tests' blocking calls never stall it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

HOP_HEADERS = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "accept-encoding",
    "content-encoding",
    "upgrade",
}
UNAVAILABLE = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "fault proxy: no healthy upstream",
    "reason": "ServiceUnavailable",
    "code": 503,
}


@dataclass(eq=False)
class Stream:
    request: web.Request
    upstream: aiohttp.ClientResponse | None = None
    frozen: bool = False


class FaultProxy:
    def __init__(self, upstream: str, ca_file: Path, cert_file: Path, key_file: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.mode = "pass"
        self.streams: set[Stream] = set()
        self.answered_503 = 0
        self.frozen_streams = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # ---- control (from the test's thread) ----

    def start(self) -> str:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def fail(self) -> None:
        self._call(self._fail)

    def freeze(self) -> None:
        self._call(self._freeze)

    def heal(self) -> None:
        self._call(self._heal)

    def _call(self, function: object) -> None:
        async def run() -> None:
            function()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # ---- the proxy (in its loop) ----

    def _fail(self) -> None:
        self.mode = "503"
        for stream in list(self.streams):
            if stream.upstream is not None:
                stream.upstream.close()
            if stream.request.transport is not None:
                stream.request.transport.close()

    def _freeze(self) -> None:
        self.mode = "freeze"
        for stream in self.streams:
            stream.frozen = True

    def _heal(self) -> None:
        self.mode = "pass"

    async def _start(self) -> str:
        upstream_tls = ssl.create_default_context(cafile=str(self.ca_file))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_tls), auto_decompress=False
        )
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(str(self.cert_file), str(self.key_file))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_tls)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"https://127.0.0.1:{port}"

    async def _stop(self) -> None:
        for stream in list(self.streams):
            if stream.upstream is not None:
                stream.upstream.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "503":
            self.answered_503 += 1
            return web.json_response(UNAVAILABLE, status=503)
        watch = request.query.get("watch") in ("true", "1")
        stream = Stream(request, frozen=watch and self.mode == "freeze")
        if stream.frozen:
            self.frozen_streams += 1
            await asyncio.Event().wait()  # never answered; ends when the client hangs up
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body or None,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        except (aiohttp.ClientError, OSError) as error:
            return web.json_response({**UNAVAILABLE, "message": f"fault proxy: {error!r}"}, status=503)
        answer_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        if not watch:
            async with upstream:
                return web.Response(
                    body=await upstream.read(), status=upstream.status, headers=answer_headers
                )
        stream.upstream = upstream
        self.streams.add(stream)
        response = web.StreamResponse(status=upstream.status, headers=answer_headers)
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if stream.frozen:
                    self.frozen_streams += 1
                    await asyncio.Event().wait()  # data held back for good; the connection stays open
                await response.write(chunk)
            await response.write_eof()
            return response
        except (aiohttp.ClientError, ConnectionError):
            return response
        finally:
            self.streams.discard(stream)
            upstream.close()
