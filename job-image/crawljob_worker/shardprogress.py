"""Progress of a sharded crawl: every shard reports into one `status.progress` (docs/worker.md, "Shards").

Shard I writes only its own entry, `status.progress.shards.<I>` (a JSON merge patch merges map keys,
so shards never overwrite each other's), and the whole-object figures (`bytesRead`, `rowsRead`,
`bytesTotal`, `percent`) as the sums over the entries of its run. Those sums are read-modify-write:
the patch carries the `metadata.resourceVersion` it was computed from, so a patch based on a stale
read is refused (409 Conflict) and recomputed from a fresh read, a bounded number of times.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from crawljob_worker.kubeapi import Conflict, PatchFailed, StatusWriter

log = logging.getLogger("crawljob_worker.report")

# A periodic report gives up after these conflicts (the next one comes a few seconds later);
# the final report tries harder: each conflict means another shard's patch landed.
ATTEMPTS = 3
FINAL_ATTEMPTS = 20


def _percent(done: int, total: int) -> str:
    return "100%" if total == 0 else f"{min(100, done * 100 // total)}%"


def shard_progress_patch(
    stored: Mapping[str, Any],
    *,
    index: int,
    run_id: str | None,
    bytes_read: int,
    rows_read: int,
    bytes_total: int,
    update_time: str,
) -> dict[str, Any]:
    """The merge patch of shard *index*'s progress over the CrawlJob *stored* (pure): its own entry,
    the sums over this run's entries, the precondition on *stored*'s resourceVersion, and null for
    entries an earlier run left (they are removed)."""
    progress = ((stored.get("status") or {}).get("progress")) or {}
    entries = progress.get("shards") if isinstance(progress, Mapping) else None
    own = {"runId": run_id, "bytesRead": bytes_read, "rowsRead": rows_read, "updateTime": update_time}
    shards: dict[str, Any] = {}
    ours = {str(index): own}
    for key, entry in (entries or {}).items():
        if key == str(index):
            continue
        if isinstance(entry, Mapping) and entry.get("runId") == run_id:
            ours[key] = dict(entry)
        else:
            shards[key] = None  # an earlier run's entry
    shards[str(index)] = own
    total_read = min(sum(int(entry.get("bytesRead") or 0) for entry in ours.values()), bytes_total)
    body: dict[str, Any] = {
        "status": {
            "progress": {
                "bytesRead": total_read,
                "rowsRead": sum(int(entry.get("rowsRead") or 0) for entry in ours.values()),
                "bytesTotal": bytes_total,
                "percent": _percent(total_read, bytes_total),
                "updateTime": update_time,
                "shards": shards,
            }
        }
    }
    version = (stored.get("metadata") or {}).get("resourceVersion")
    if version is not None:
        body["metadata"] = {"resourceVersion": str(version)}
    return body


class ShardStatus:
    """Sends shard *index*'s progress (`Progress` calls `send` from its background thread)."""

    def __init__(
        self,
        writer: StatusWriter,
        *,
        index: int,
        run_id: str | None,
        bytes_total: int,
        now: Callable[[], str],
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.writer = writer
        self.name = writer.target.name
        self.index = index
        self.run_id = run_id
        self.bytes_total = bytes_total
        self._now = now
        self._pause = pause
        self._stored: dict[str, Any] | None = None  # the CrawlJob as last read or patched
        self.conflicts = 0

    def send(self, bytes_read: int, rows_read: int, *, final: bool) -> None:
        """Patch this shard's entry and the sums; on a conflict read again and recompute. Raises
        PatchFailed when every attempt failed."""
        attempts = FINAL_ATTEMPTS if final else ATTEMPTS
        for attempt in range(attempts):
            if self._stored is None:
                self._stored = self.writer.get()
            body = shard_progress_patch(
                self._stored,
                index=self.index,
                run_id=self.run_id,
                bytes_read=bytes_read,
                rows_read=rows_read,
                bytes_total=self.bytes_total,
                update_time=self._now(),
            )
            try:
                self._stored = self.writer.patch(body)
                return
            except Conflict:
                self._stored = None
                self.conflicts += 1
                # Shards finishing together all conflict at once: spread their retries.
                self._pause(random.uniform(0.0, 0.05 * (attempt + 1)))
        raise PatchFailed(f"shard {self.index}'s progress conflicted {attempts} times in a row")
