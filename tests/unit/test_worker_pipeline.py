"""The reader and writer threads: order kept, errors surface in the parsing thread, stopping works."""

import threading
from collections.abc import Iterator
from contextlib import closing

import pytest

from crawljob_worker.pipeline import Drain, Pending, prefetch


def test_prefetch_keeps_order() -> None:
    assert list(prefetch(iter(range(100)))) == list(range(100))


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
    drain: Drain[int] = Drain(lambda item: seen.append((item, threading.current_thread().name)))
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
def test_abort_stops_the_writer_and_later_puts_fail() -> None:
    release = threading.Event()
    handled: list[int] = []

    def handle(item: int) -> None:
        release.wait(5)
        handled.append(item)

    drain: Drain[int] = Drain(handle)
    drain.put(1)  # taken at once; the handler now waits
    threading.Timer(0.2, release.set).start()
    drain.abort()
    assert handled == [1]
    with pytest.raises(RuntimeError, match="stopped"):
        drain.put(2)


def test_the_reader_is_never_more_than_one_item_ahead() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for item in range(50):
            produced.append(item)
            yield item

    for item in prefetch(items()):
        # the consumer holds `item`; the reader may have made the next one, not more
        assert len(produced) <= item + 2


def test_pending_runs_in_the_background_and_gives_its_result() -> None:
    started = threading.Event()
    release = threading.Event()

    def call() -> str:
        started.set()
        release.wait(5)
        return "opened"

    pending = Pending(call, name="test-pending")
    assert started.wait(5)  # running before anyone asks for the result
    release.set()
    assert pending.result() == "opened"


def test_pending_raises_its_error_in_the_waiting_thread() -> None:
    def call() -> str:
        raise ValueError("no such bucket")

    with pytest.raises(ValueError, match="no such bucket"):
        Pending(call, name="test-pending").result()
