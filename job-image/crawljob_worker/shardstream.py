"""One shard of a CSV object as a readable stream: the header record, then the bytes the shard owns.

The object is read from the shard's scan point (`ShardPlan.scan_from`) by one GET of the range up to
the object's end (an `S3Stream`, which resumes after a drop as a 1-shard run does), or a seek in a
local file; the `ShardCutter` decides where the shard's records begin and end, and the GET is closed
as soon as the last record is complete, so a shard reads its range plus one record.
"""

from __future__ import annotations

import io
from collections import deque
from pathlib import Path
from typing import Any

from crawljob_worker.errors import bad_input, source_not_found
from crawljob_worker.shard import ShardCutter, ShardEdges, header_record
from crawljob_worker.source import S3Stream, SourceInfo, s3_request
from crawljob_worker.uri import Location

READ_BYTES = 1 << 20
HEADER_LIMIT = 64 << 20


class ObjectAccess:
    """The source object's size and version, ranged reads, and streams from an offset (S3 or a file)."""

    def __init__(self, client: Any, location: Location, *, version_id: str | None, retries: int) -> None:
        self._client = client
        self._location = location
        self._retries = retries
        self._prefix: bytes | None = None
        if location.is_s3:
            if not location.path or location.path.endswith("/"):
                raise source_not_found(f"{location.uri()} is not an object key")
            head = s3_request(client.head_object, location, VersionId=version_id)
            self.info = SourceInfo(
                uri=location.uri(),
                size=int(head["ContentLength"]),
                etag=head.get("ETag"),
                version_id=head.get("VersionId") or version_id,
            )
        else:
            try:
                size = Path(location.path).stat().st_size
            except FileNotFoundError:
                raise source_not_found(f"{location.path} does not exist") from None
            self.info = SourceInfo(uri=location.uri(), size=size)

    @property
    def size(self) -> int:
        return self.info.size or 0

    def open_from(self, offset: int) -> io.RawIOBase:
        """A stream of the object's bytes from *offset* to its end."""
        if self._location.is_s3:
            return S3Stream(
                self._client,
                self._location,
                version_id=self.info.version_id,
                retries=self._retries,
                span=(offset, self.size - 1),
                etag=self.info.etag,
            )
        handle = Path(self._location.path).open("rb", buffering=0)  # noqa: SIM115 - closed by the caller
        handle.seek(offset)
        return handle

    def read_range(self, first: int, length: int) -> bytes:
        """Up to *length* bytes from *first* (fewer at the object's end)."""
        length = min(length, self.size - first)
        if length <= 0:
            return b""
        stream = (
            S3Stream(
                self._client,
                self._location,
                version_id=self.info.version_id,
                retries=self._retries,
                span=(first, first + length - 1),
                etag=self.info.etag,
            )
            if self._location.is_s3
            else None
        )
        if stream is None:
            with Path(self._location.path).open("rb") as handle:
                handle.seek(first)
                return handle.read(length)
        try:
            return stream.read(length) or b""
        finally:
            stream.close()

    def prefix(self) -> bytes:
        """The object's first 64 KiB (fewer for a smaller object): magic bytes and, usually, the header."""
        if self._prefix is None:
            self._prefix = self.read_range(0, 64 * 1024)
        return self._prefix

    def header(self, quote: bytes | None) -> bytes:
        """The object's first record (the header line), by ranged reads of growing length."""
        length = 64 * 1024
        while True:
            prefix = self.prefix() if length == 64 * 1024 else self.read_range(0, length)
            record = header_record(prefix, quote)
            if record is not None:
                return record
            if len(prefix) < length:  # the whole object is one record without a line end
                return prefix.removeprefix(b"\xef\xbb\xbf") + b"\n"
            if length >= HEADER_LIMIT:
                raise bad_input(
                    f"the header record is longer than {HEADER_LIMIT >> 20} MiB: probably an unclosed quote"
                )
            length *= 4


class ShardStream(io.RawIOBase):
    """The header record (for shards after the first) and then the shard's own bytes."""

    def __init__(self, raw: io.RawIOBase, info: SourceInfo, cutter: ShardCutter, header: bytes) -> None:
        super().__init__()
        self.info = info
        # Bytes of the object this shard owns, handed on so far: the shards' figures add up to the
        # object's size (what a 1-shard run reads), without the scan before the shard's first record
        # and the read-ahead past its last. `fetched` counts every byte the GET returned.
        self.offset = 0
        self.fetched = 0
        self._raw = raw
        self._cutter = cutter
        self._pending: deque[memoryview] = deque([memoryview(header)] if header else [])
        self._ended = False

    @property
    def reconnects(self) -> int:
        return int(getattr(self._raw, "reconnects", 0))

    def edges(self) -> ShardEdges:
        """Where the shard began and ended; call once the stream is read to its end."""
        return self._cutter.finish()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as whole, whole.cast("B") as view:
            while not self._pending:
                if self._ended or self._cutter.done:
                    self._ended = True
                    return 0
                count = self._raw.readinto(view[:READ_BYTES])
                if not count:  # the object's end: the bytes the cutter held to speculate are cut now
                    self._ended = True
                    owned = self._cutter.flush()
                    self.offset += sum(len(piece) for piece in owned)
                    self._pending.extend(owned)
                    continue
                self.fetched += count
                owned = self._cutter.feed(view[:count])
                self.offset += sum(len(piece) for piece in owned)
                if len(owned) == 1 and owned[0].obj is view.obj and len(owned[0]) == count:
                    # Inside its range a shard owns every byte it reads: they stay where they were
                    # read, in the caller's buffer, with no copy (a 1-shard run's cost).
                    return count
                # The shard's start, its end, the speculation window: keep copies of the owned parts
                # (those in the caller's buffer are gone when it reuses it).
                self._pending.extend(
                    memoryview(bytes(piece)) if piece.obj is view.obj else piece for piece in owned
                )
            piece = self._pending[0]
            count = min(len(view), len(piece))
            view[:count] = piece[:count]
        if count == len(piece):
            self._pending.popleft()
        else:
            self._pending[0] = piece[count:]
        return count

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
