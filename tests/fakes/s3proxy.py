"""An HTTP proxy in front of the local S3 that refuses conditional writes: a PUT carrying
`If-None-Match` is answered 501 NotImplemented (a store without them), or, with `conflicts=K`, 409
ConditionalRequestConflict for the first K such PUTs (S3's answer to a write racing another one) and
forwarded after that. Everything else is forwarded; every request is logged. It runs its own event loop in a thread, so
blocking callers never stall it."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
from aiohttp import web

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
CONFLICT = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ConditionalRequestConflict</Code><Message>A '
    "conflicting operation occurred. If using PutObject you can retry the request.</Message></Error>"
)
NOT_IMPLEMENTED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NotImplemented</Code><Message>A header you '
    "provided implies functionality that is not implemented</Message><Header>If-None-Match</Header></Error>"
)


class ConditionalWritesProxy:
    def __init__(self, upstream: str, conflicts: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.conflicts = conflicts
        self.refused = 0
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="s3-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> str:
        """Start serving on loopback; returns the proxy's URL."""
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.method == "PUT" and "If-None-Match" in request.headers:
            if self.conflicts is None:
                self.refused += 1
                return web.Response(status=501, text=NOT_IMPLEMENTED, content_type="application/xml")
            if self.refused < self.conflicts:
                self.refused += 1
                return web.Response(status=409, text=CONFLICT, content_type="application/xml")
        assert self._session is not None
        headers = {key: value for key, value in request.headers.items() if key.lower() not in HOP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            response = web.StreamResponse(status=answer.status)
            for key, value in answer.headers.items():
                if key.lower() not in HOP_HEADERS:
                    response.headers[key] = value
            # A HEAD answer has no body but the object's Content-Length: pass it on as it came.
            response.content_length = int(answer.headers.get("Content-Length", len(body)))
            await response.prepare(request)
            if request.method != "HEAD":
                await response.write(body)
            await response.write_eof()
            return response
