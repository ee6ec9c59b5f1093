"""The reader and writer threads: order kept, errors surface in the parsing thread, stopping works."""

import threading
from collections.abc import Iterator
from contextlib import closing

import pytest

from crawljob_worker.pipeline import Drain, prefetch


def test_prefetch_keeps_order() -> None:
    assert list(prefetch(iter(range(100)), depth=2)) == list(range(100))


def test_a_producer_error_is_raised_to_the_consumer() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("broken source")

    with pytest.raises(ValueError, match="broken source"):
        list(prefetch(items()))


@pytest.mark.timeout(10)
def test_closing_early_stops_the_producer() -> None:
    blocks = prefetch(iter(range(10**9)))
    with closing(blocks):
        assert next(blocks) == 0


def test_drain_handles_every_item_in_order_in_another_thread() -> None:
    seen: list[tuple[int, str]] = []
    drain: Drain[int] = Drain(lambda item: seen.append((item, threading.current_thread().name)), depth=2)
    for item in range(100):
        drain.put(item)
    drain.close()
    assert [item for item, _ in seen] == list(range(100))
    assert {name for _, name in seen} == {"crawljob-writer"}


@pytest.mark.timeout(10)
def test_a_writer_error_is_raised_by_put_or_close() -> None:
    def handle(item: int) -> None:
        if item == 3:
            raise OSError("disk full")

    drain: Drain[int] = Drain(handle)
    with pytest.raises(OSError, match="disk full"):
        for item in range(10**6):
            drain.put(item)
        drain.close()


@pytest.mark.timeout(10)
def test_abort_stops_a_blocked_writer_without_handling_the_rest() -> None:
    release = threading.Event()
    handled: list[int] = []

    def handle(item: int) -> None:
        release.wait(5)
        handled.append(item)

    drain: Drain[int] = Drain(handle, depth=1)
    drain.put(1)
    drain.put(2)
    release.set()
    drain.abort()
    assert handled in ([1], [1, 2])
