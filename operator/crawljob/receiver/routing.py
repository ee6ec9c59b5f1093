"""Routing webhook events to CrawlSources: the receiver's view of the sources in its namespace.

`SourceIndex` lists the CrawlSources at startup and follows them with a watch (re-listing after any
interruption), so choosing the source of an event costs no API call. The choice itself is
`crawljob.sources.select_source` (longest prefix wins), the same function the operator uses.
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

RETRY_SECONDS = 5.0
WATCH_SECONDS = 300


class SourceIndex:
    """The valid CrawlSources of one namespace, kept current by a list + watch."""

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
        """Load the sources (waiting at most *initial_timeout*), then follow them in the background."""
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
                loaded.set()
                async for event in self.client.watch(kube.CRAWLSOURCES, self.namespace, WATCH_SECONDS):
                    self._apply(event)
            except kube.KubeError as exc:
                if exc.status in (403, 404):
                    log.warning(
                        "CrawlSources cannot be read (%s): events follow the chart-wide settings only", exc
                    )
                    self.enabled = False
                    self.sources = {}
                    loaded.set()
                    return
                log.warning("following CrawlSources interrupted (will retry): %s", exc)
                loaded.set()
            await asyncio.sleep(RETRY_SECONDS)

    def _apply(self, event: Mapping[str, Any]) -> None:
        body = event.get("object") or {}
        name = str((body.get("metadata") or {}).get("name") or "")
        if event.get("type") == "DELETED":
            self.sources.pop(name, None)
            return
        if event.get("type") not in ("ADDED", "MODIFIED"):
            return
        entry = self._entry(body)
        if entry is None:
            self.sources.pop(name, None)
        else:
            self.sources[entry[0]] = entry[1]

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
