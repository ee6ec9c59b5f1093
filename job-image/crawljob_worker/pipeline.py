"""Overlap reading, parsing and writing: a bounded queue in front of and behind the parser.

pyarrow's CSV parsing, Parquet encoding, numpy's byte counting and socket reads all release the GIL,
so on two cores a reader thread and a writer thread keep both busy. Queues are bounded (a block or
two in flight), so memory stays a small multiple of the chunk size; an error in either thread is
raised in the main thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(channel: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put unless told to stop; False when stopped."""
    while not stop.is_set():
        try:
            channel.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def prefetch(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """*items* produced by a background thread, at most *depth* ahead of the consumer."""
    channel: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(channel, item, stop):
                    return
            _put(channel, _DONE, stop)
        except BaseException as error:  # handed to the consumer, which raises it
            _put(channel, _Failure(error), stop)

    thread = threading.Thread(target=produce, name="crawljob-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = channel.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=30)


class BackgroundConsumer(Generic[T]):
    """Calls *handle* on each submitted item in a background thread, in order."""

    def __init__(self, handle: Callable[[T], None], depth: int = 1) -> None:
        self._handle = handle
        self._channel: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._consume, name="crawljob-writer", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._channel.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            try:
                self._handle(item)  # type: ignore[arg-type]
            except BaseException as error:  # raised in the main thread by submit()/close()
                self._error = error
                self._stop.set()
                return

    def submit(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        if not _put(self._channel, item, self._stop) and self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait until every item is handled; raise the consumer's error if it had one."""
        _put(self._channel, _DONE, self._stop)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundConsumer[T]:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if error is not None:
            self._stop.set()
            self._thread.join(timeout=30)
        else:
            self.close()
