"""The reader/writer threads: order kept, errors surface in the main thread, nothing hangs."""

from collections.abc import Iterator
from contextlib import closing

import pytest

from crawljob_worker.pipeline import BackgroundConsumer, prefetch


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


def test_consumer_handles_in_order_and_reports_its_error() -> None:
    seen: list[int] = []
    with BackgroundConsumer(seen.append, depth=1) as consumer:
        for item in range(50):
            consumer.submit(item)
    assert seen == list(range(50))

    def fail(item: int) -> None:
        raise RuntimeError(f"cannot write {item}")

    with pytest.raises(RuntimeError, match="cannot write 0"), BackgroundConsumer(fail) as failing:
        for item in range(5):
            failing.submit(item)
        failing.close()


@pytest.mark.timeout(10)
def test_consumer_exits_when_the_main_thread_fails() -> None:
    with pytest.raises(KeyError), BackgroundConsumer(lambda item: None) as consumer:
        consumer.submit(1)
        raise KeyError("parse failed")
