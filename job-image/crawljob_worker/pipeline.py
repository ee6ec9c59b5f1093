"""Overlap reading, parsing and writing: a reader thread before the parser, a writer thread after it.

Each bounded queue holds at most *depth* items, so memory stays a small multiple of the chunk size;
an error in either thread is raised in the parsing thread, and closing or aborting stops them.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterator
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


class Drain(Generic[T]):
    """Runs *handle* on each item put, in a background thread, at most *depth* items behind.

    Parsing and Parquet encoding both run in pyarrow without the GIL, so handing the writing to a
    thread lets the two overlap. An error in *handle* is raised by the next `put` or by `close`.
    """

    def __init__(self, handle: Callable[[T], None], depth: int = 1, name: str = "crawljob-writer") -> None:
        self._handle = handle
        self._channel: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._channel.get()
            if item is _DONE:
                return
            try:
                self._handle(item)  # type: ignore[arg-type]
            except BaseException as error:  # handed to the producer, which raises it
                self._error = error
                self._stop.set()
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        """Queue *item*; waits while the queue is full; raises the handler's error if it failed."""
        self._raise()
        if not _put(self._channel, item, self._stop):
            self._raise()
            raise RuntimeError("the writer thread was stopped")

    def close(self) -> None:
        """Wait until every item is handled; raises the handler's error if it failed."""
        _put(self._channel, _DONE, self._stop)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Stop without handling what is still queued."""
        self._stop.set()
        while True:
            try:
                self._channel.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._channel.put_nowait(_DONE)
        self._thread.join(timeout=30)
