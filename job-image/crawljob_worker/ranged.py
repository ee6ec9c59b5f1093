"""Reading an S3 object with parallel ranged GETs (`--s3-connections`), handed on in order."""

from __future__ import annotations

import io
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from crawljob_worker.errors import transient
from crawljob_worker.source import S3Stream, SourceInfo, s3_request
from crawljob_worker.uri import Location


class RangedS3Stream(io.RawIOBase):
    """An S3 object read as consecutive byte ranges by *connections* parallel GETs, handed on in order.

    One GET stream from S3 gives roughly 50-100 MB/s, less than the worker parses on two cores; AWS's
    advice is byte-range fetches in parallel. Every range is an `S3Stream` limited to that span,
    pinned to the eTag (or version) a HEAD found, so each one resumes on its own after a transient
    error, within its own retry budget. At most *connections* ranges are held, fetched or waiting,
    besides the one being handed on, so memory stays at (connections + 1) x *range_bytes*.
    """

    def __init__(
        self,
        client: Any,
        location: Location,
        *,
        version_id: str | None,
        retries: int,
        connections: int,
        range_bytes: int,
    ) -> None:
        super().__init__()
        self._client = client
        self._location = location
        self._retries = retries
        self.info = self._head(version_id)
        self.offset = 0
        self.reconnects = 0
        size = self.info.size or 0
        self._spans = iter(
            [(first, min(first + range_bytes, size) - 1) for first in range(0, size, range_bytes)]
        )
        self._pool = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="crawljob-range")
        self._fetching: deque[Future[tuple[bytearray, int]]] = deque()
        self._current = memoryview(bytearray())
        self._position = 0
        for _ in range(connections):
            self._fetch_next()

    def _head(self, version_id: str | None) -> SourceInfo:
        response = s3_request(self._client.head_object, self._location, VersionId=version_id)
        return SourceInfo(
            uri=self._location.uri(),
            size=int(response["ContentLength"]),
            etag=response.get("ETag"),
            version_id=response.get("VersionId") or version_id,
        )

    def _fetch_next(self) -> None:
        span = next(self._spans, None)
        if span is not None:
            self._fetching.append(self._pool.submit(self._fetch, span))

    def _fetch(self, span: tuple[int, int]) -> tuple[bytearray, int]:
        """The bytes of *span* and how many reconnects reading them took."""
        stream = S3Stream(
            self._client,
            self._location,
            version_id=self.info.version_id,
            retries=self._retries,
            span=span,
            etag=self.info.etag,
        )
        try:
            data = bytearray(span[1] - span[0] + 1)
            with memoryview(data) as view:
                filled = 0
                while filled < len(data):
                    with view[filled:] as rest:
                        count = stream.readinto(rest)
                    if not count:
                        raise transient(
                            f"{self.info.uri} ended at byte {span[0] + filled}, before byte {span[1]}"
                        )
                    filled += count
            return data, stream.reconnects
        finally:
            stream.close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._position >= len(self._current):
            if not self._fetching:
                return 0
            data, reconnects = self._fetching.popleft().result()  # a range's WorkerError is raised here
            self.reconnects += reconnects
            self._current.release()
            self._current, self._position = memoryview(data), 0
            self._fetch_next()
        with memoryview(buffer) as whole, whole.cast("B") as view:
            count = min(len(view), len(self._current) - self._position)
            view[:count] = self._current[self._position : self._position + count]
        self._position += count
        self.offset += count
        return count

    def close(self) -> None:
        if not self.closed:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._fetching.clear()
        super().close()
