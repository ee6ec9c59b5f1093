"""What the worker tells the world: the termination message (≤ 4 KiB JSON) and progress.

Progress goes to the CrawlJob's `status.progress` (a merge patch through the kubernetes package, see
`kubeapi`, at most every few seconds, never fatal) when a CrawlJob name is known, and to the log (a bar
on a terminal) otherwise. A shard of a sharded crawl reports through `shardprogress.ShardStatus`.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

from crawljob_worker.contract import SHARD_KEY, SUMMARY_KEYS
from crawljob_worker.kubeapi import KubeTarget, PatchFailed, StatusWriter

log = logging.getLogger("crawljob_worker.report")

TERMINATION_LIMIT = 4096


def termination_message(summary: Mapping[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """The summary as one JSON object of at most *limit* bytes (the message is shortened to fit)."""
    ordered = {key: summary.get(key) for key in SUMMARY_KEYS}
    if summary.get(SHARD_KEY):  # sharded runs only: which shard, and whether it finalized
        ordered[SHARD_KEY] = summary[SHARD_KEY]
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) <= limit:
        return text
    message = str(ordered.get("message") or "")
    overflow = len(text.encode("utf-8")) - limit
    keep = max(0, len(message.encode("utf-8")) - overflow - 8)
    ordered["message"] = message.encode("utf-8")[:keep].decode("utf-8", errors="ignore") + "…"
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)
    while len(text.encode("utf-8")) > limit and ordered["message"]:
        ordered["message"] = str(ordered["message"])[:-16]
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)
    return text


def write_termination_message(path: str, summary: Mapping[str, Any]) -> None:
    """Write the termination message; a missing /dev/termination-log outside Kubernetes is only logged."""
    try:
        Path(path).write_text(termination_message(summary), encoding="utf-8")
    except OSError as error:
        log.info("termination message not written to %s: %s", path, error)


def percent(done: int, total: int | None) -> str:
    """`"42%"` (floor, so 100% means done); `""` when the total is unknown."""
    if not total:
        return "100%" if total == 0 else ""
    return f"{min(100, done * 100 // total)}%"


def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusSink(Protocol):
    """Where progress reports go: `send` raises PatchFailed when a report did not land."""

    name: str

    def send(self, bytes_read: int, rows_read: int, *, final: bool) -> None: ...


class WholeStatus:
    """The whole object's progress from its one worker: a plain merge patch of status.progress."""

    def __init__(self, writer: StatusWriter, total: int | None) -> None:
        self.writer = writer
        self.name = writer.target.name
        self.total = total

    def send(self, bytes_read: int, rows_read: int, *, final: bool) -> None:
        self.writer.patch(progress_patch(bytes_read, self.total, rows_read, now_iso()))


def progress_patch(
    bytes_read: int, bytes_total: int | None, rows_read: int, update_time: str
) -> dict[str, Any]:
    """The merge patch of status.progress (pure)."""
    progress: dict[str, Any] = {"bytesRead": bytes_read, "rowsRead": rows_read, "updateTime": update_time}
    if bytes_total is not None:
        progress["bytesTotal"] = bytes_total
        progress["percent"] = percent(bytes_read, bytes_total)
    return {"status": {"progress": progress}}


class Progress:
    """Throttled progress: at most one report per *interval*, plus a final one.

    Kubernetes patches run in a background thread so a slow API server never stalls the crawl;
    a report still in flight makes the next one be skipped, not queued.
    """

    def __init__(
        self,
        total: int | None,
        interval: float,
        target: KubeTarget | None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        sink: StatusSink | None = None,
    ) -> None:
        self.total = total
        self.interval = interval
        self.sink = sink or (WholeStatus(StatusWriter(target), total) if target is not None else None)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.clock = clock
        self.started = clock()
        self._last = float("-inf")
        self._inflight: threading.Thread | None = None
        self.patches_sent = 0
        self.patch_errors = 0

    def update(self, bytes_read: int, rows_read: int, *, final: bool = False) -> None:
        now = self.clock()
        if not final and now - self._last < self.interval:
            return
        self._last = now
        if self.sink is not None:
            self._send(bytes_read, rows_read, final=final)
        self._show(bytes_read, rows_read, now, final)

    def _send(self, bytes_read: int, rows_read: int, *, final: bool) -> None:
        if self._inflight is not None and self._inflight.is_alive():
            if not final:
                return
            self._inflight.join(timeout=10)
        thread = threading.Thread(
            target=self._patch, args=(bytes_read, rows_read, final), name="crawljob-progress", daemon=True
        )
        self._inflight = thread
        thread.start()
        if final:
            # Long enough for a shard's final report to outlast its peers' conflicting ones.
            thread.join(timeout=30)

    def _patch(self, bytes_read: int, rows_read: int, final: bool) -> None:
        assert self.sink is not None
        try:
            self.sink.send(bytes_read, rows_read, final=final)
            self.patches_sent += 1
        except PatchFailed as error:
            self.patch_errors += 1
            log.warning("progress patch of crawljob %s failed: %s", self.sink.name, error)

    def _show(self, bytes_read: int, rows_read: int, now: float, final: bool) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = bytes_read / elapsed / 1e6
        share = percent(bytes_read, self.total) or "?"
        if self.tty:
            done = int(20 * bytes_read / self.total) if self.total else 0
            bar = "#" * min(done, 20) + "." * (20 - min(done, 20))
            end = "\n" if final else ""
            self.stream.write(
                f"\r[{bar}] {share:>4} {bytes_read / 1e6:,.1f} MB {rows_read:,} rows {rate:,.1f} MB/s{end}"
            )
            self.stream.flush()
        elif self.sink is None or final:
            log.info("progress %s: %d bytes, %d rows, %.1f MB/s", share, bytes_read, rows_read, rate)
