"""Overlap network reads with parsing: a reader thread and a bounded queue in front of the parser.

The queue holds at most *depth* blocks, so memory stays a small multiple of the chunk size; an
error in the reader is raised in the consumer, and closing the consumer stops the reader.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

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
