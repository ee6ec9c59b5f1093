"""The reader thread: order kept, errors surface in the consumer, closing stops it."""

from collections.abc import Iterator
from contextlib import closing

import pytest

from crawljob_worker.pipeline import prefetch


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
