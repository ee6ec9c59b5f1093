"""Routing webhook events to CrawlSources: the receiver's view of the sources in its namespace.

`SourceIndex` lists the CrawlSources at startup and again every REFRESH_SECONDS, so choosing the
source of an event costs no API call. A periodic list rather than a watch: a namespace holds a
handful of sources, one small LIST every few seconds per replica costs the API less than it notices,
and no replica holds a long-lived connection (which would also hold up an API server's or
emulator's graceful shutdown). A change reaches the routing within REFRESH_SECONDS. The choice
itself is `crawljob.sources.select_source` (longest prefix wins), the function the operator uses.
Without the CrawlSource CRD (404) or the RBAC to read it (403), routing is off and every event
follows the chart-wide settings, as before sources existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from crawljob import kube, sources

log = logging.getLogger("crawljob.receiver")

REFRESH_SECONDS = 5.0


class SourceIndex:
    """The valid CrawlSources of one namespace, re-listed every REFRESH_SECONDS."""

    def __init__(self, client: kube.KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.sources: dict[str, sources.Source] = {}
        self.enabled = True
        self._task: asyncio.Task[None] | None = None

    def route(self, manifest: Mapping[str, Any], bucket: str, key: str) -> dict[str, Any]:
        """The CrawlJob manifest with the template and label of the object's source, if one matches."""
        chosen = sources.select_source(self.sources.values(), bucket, key)
        return sources.apply_source(manifest, chosen) if chosen else dict(manifest)

    async def start(self, initial_timeout: float = 5.0) -> None:
        """Load the sources (waiting at most *initial_timeout*), then keep them current in the background."""
        loaded = asyncio.Event()
        self._task = asyncio.create_task(self._follow(loaded))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loaded.wait(), initial_timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self, loaded: asyncio.Event) -> None:
        while True:
            try:
                items = await self.client.list(kube.CRAWLSOURCES, self.namespace)
                self.sources = dict(filter(None, (self._entry(item) for item in items)))
            except kube.KubeError as exc:
                if exc.status in (403, 404):
                    log.warning(
                        "CrawlSources cannot be read (%s): events follow the chart-wide settings only", exc
                    )
                    self.enabled = False
                    self.sources = {}
                    loaded.set()
                    return
                log.warning("cannot list CrawlSources (routing keeps the last list; will retry): %s", exc)
            loaded.set()
            await asyncio.sleep(REFRESH_SECONDS)

    @staticmethod
    def _entry(body: Mapping[str, Any]) -> tuple[str, sources.Source] | None:
        try:
            source = sources.source_from_body(body)
        except sources.InvalidSource as exc:
            log.warning(
                "CrawlSource %s ignored for routing: %s", (body.get("metadata") or {}).get("name"), exc
            )
            return None
        return source.name, source
