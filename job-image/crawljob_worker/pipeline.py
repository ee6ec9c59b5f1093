"""Overlap reading, parsing and writing: a reader thread before the parser, a writer thread after it.

Threads meet at a handoff of one item whose `put` returns only once the other side has taken the
item, so the producer starts on the next item while the consumer works on this one and never runs
further ahead: two items alive per handoff (with a queue of one it would be three), which keeps peak
memory at a small multiple of the chunk size. An error in either thread is raised in the parsing
thread, and closing or aborting stops them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_EMPTY = object()
_DONE = object()
WAIT_SECONDS = 0.1  # how often a waiting side looks at the stop flag


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Handoff:
    """One item passed from a producer thread to a consumer thread."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._item: object = _EMPTY
        self.stop = threading.Event()

    def put(self, item: object) -> bool:
        """Hand *item* over and wait until it is taken; False if stopped first."""
        with self._changed:
            while self._item is not _EMPTY:
                if self.stop.is_set():
                    return False
                self._changed.wait(WAIT_SECONDS)
            self._item = item
            self._changed.notify_all()
            while self._item is item:
                if self.stop.is_set():
                    return False
                self._changed.wait(WAIT_SECONDS)
            return True

    def take(self) -> object:
        """The next item (waits for it); `_DONE` once stopped."""
        with self._changed:
            while self._item is _EMPTY:
                if self.stop.is_set():
                    return _DONE
                self._changed.wait(WAIT_SECONDS)
            item, self._item = self._item, _EMPTY
            self._changed.notify_all()
            return item


def prefetch(items: Iterator[T]) -> Generator[T, None, None]:
    """*items* produced by a background thread, one ahead of the consumer."""
    handoff = Handoff()

    def produce() -> None:
        try:
            for item in items:
                if not handoff.put(item):
                    return
            handoff.put(_DONE)
        except BaseException as error:  # handed to the consumer, which raises it
            handoff.put(_Failure(error))

    thread = threading.Thread(target=produce, name="crawljob-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.take()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        handoff.stop.set()
        thread.join(timeout=30)


class Drain(Generic[T]):
    """Runs *handle* on each item put, in a background thread, one item behind the producer.

    Parsing and Parquet encoding both run in pyarrow without the GIL, so handing the writing to a
    thread lets the two overlap. An error in *handle* is raised by the next `put` or by `close`.
    """

    def __init__(self, handle: Callable[[T], None], name: str = "crawljob-writer") -> None:
        self._handle = handle
        self._handoff = Handoff()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._handoff.take()
            if item is _DONE:
                return
            try:
                self._handle(item)  # type: ignore[arg-type]
            except BaseException as error:  # handed to the producer, which raises it
                self._error = error
                self._handoff.stop.set()
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        """Hand *item* to the writer once it is done with the previous one; raises its error."""
        self._raise()
        if not self._handoff.put(item):
            self._raise()
            raise RuntimeError("the writer thread was stopped")

    def close(self) -> None:
        """Wait until every item is handled; raises the handler's error if it failed."""
        self._handoff.put(_DONE)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Stop without handling what was not taken yet."""
        self._handoff.stop.set()
        self._thread.join(timeout=30)


class Pending(Generic[T]):
    """*call* running in a background thread from now on; `result()` waits for it and returns its
    value or raises its error."""

    def __init__(self, call: Callable[[], T], name: str) -> None:
        self._call = call
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as error:  # raised by result(), in the waiting thread
            self._error = error

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
