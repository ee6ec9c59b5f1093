"""The concurrency cap admits the oldest waiting CrawlJobs into free slots and numbers the rest."""

import pytest

from crawljob import times
from crawljob.models import CrawlJob
from crawljob.operator import gc, queue
from crawljob.operator.queue import Candidate


def _waiting(name: str, created: str) -> Candidate:
    return Candidate(name=name, creation_timestamp=created, active=False, waiting=True)


def test_admits_oldest_first_up_to_the_free_slots() -> None:
    candidates = [
        Candidate("running", "2026-01-01T00:00:00Z", active=True, waiting=False),
        _waiting("c", "2026-01-01T00:00:03Z"),
        _waiting("a", "2026-01-01T00:00:01Z"),
        _waiting("b", "2026-01-01T00:00:02Z"),
    ]
    plan = queue.plan(candidates, max_active=3)
    assert plan.admit == ("a", "b")
    assert plan.positions == {"c": 1}
    assert plan.active == 3


def test_same_second_orders_by_name() -> None:
    plan = queue.plan([_waiting("z", "T"), _waiting("m", "T"), _waiting("a", "T")], max_active=1)
    assert plan.admit == ("a",)
    assert plan.positions == {"m": 1, "z": 2}


def test_nothing_is_admitted_when_the_cap_is_full_or_exceeded() -> None:
    active = [Candidate(f"r{i}", "T", active=True, waiting=False) for i in range(4)]
    plan = queue.plan([*active, _waiting("w", "T")], max_active=3)
    assert plan.admit == ()
    assert plan.positions == {"w": 1}
    assert plan.active == 4


def test_a_position_is_rewritten_often_near_the_head_and_rarely_behind_it() -> None:
    assert queue.position_due(1, last_written=100.0, now=100.0 + queue.POSITION_HEAD_SECONDS)
    assert not queue.position_due(1, last_written=100.0, now=100.0 + queue.POSITION_HEAD_SECONDS - 0.1)
    behind = queue.POSITION_EXACT_HEAD + 1
    assert not queue.position_due(behind, last_written=100.0, now=100.0 + queue.POSITION_HEAD_SECONDS)
    assert queue.position_due(behind, last_written=100.0, now=100.0 + queue.POSITION_REFRESH_SECONDS)


def _finished(name: str, phase: str, completed: str) -> CrawlJob:
    return CrawlJob.parse(
        {"metadata": {"name": name}, "status": {"phase": phase, "completionTime": completed}}
    )


def test_gc_selects_past_ttl_and_beyond_history_limits_per_outcome() -> None:
    now = times.parse_time("2026-01-01T01:00:00Z")
    assert now is not None
    items = [
        _finished("old-ok", "Succeeded", "2026-01-01T00:00:00Z"),
        _finished("ok1", "Succeeded", "2026-01-01T00:59:00Z"),
        _finished("ok2", "Succeeded", "2026-01-01T00:58:00Z"),
        _finished("ok3", "Succeeded", "2026-01-01T00:57:00Z"),
        _finished("bad1", "Failed", "2026-01-01T00:59:30Z"),
        _finished("bad2", "Cancelled", "2026-01-01T00:59:00Z"),
        CrawlJob.parse({"metadata": {"name": "running"}, "status": {"phase": "Running"}}),
    ]
    assert gc.select_for_deletion(items, now, ttl_seconds=1800, successful_limit=None, failed_limit=None) == [
        "old-ok"
    ]
    assert gc.select_for_deletion(items, now, ttl_seconds=None, successful_limit=2, failed_limit=1) == [
        "bad2",
        "ok3",
        "old-ok",
    ]
    assert gc.select_for_deletion(items, now, None, None, None) == []


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("0055AED6DCD90281E5", "0055AED6DCD90281E6", -1),
        ("FF", "0100", -1),  # shorter is not newer: left-padded to "00FF" < "0100"
        ("100", "FF", 1),  # without padding "100" < "FF" as strings: wrong
        ("00ff", "FF", 0),  # case and leading zeros do not matter
        ("A", "9", 1),
    ],
)
def test_sequencers_compare_after_left_padding(left: str, right: str, expected: int) -> None:
    assert queue.compare_sequencers(left, right) == expected
    assert queue.compare_sequencers(right, left) == -expected


def _seq(name: str, sequencer: str, waiting: bool = True, key: str = "k") -> queue.Sequenced:
    return queue.Sequenced(name, ("ns", "bucket", key), sequencer, waiting)


def test_a_waiting_older_event_is_superseded_by_the_newest_of_its_object() -> None:
    items = [
        _seq("old", "0FF"),
        _seq("middle", "100", waiting=False),  # started: never superseded, but supersedes
        _seq("newest", "0101", waiting=False),
        _seq("other-key", "001", key="other"),
        _seq("no-sequencer", ""),
    ]
    assert queue.superseded(items) == {"old": "newest"}
    assert queue.newest_events(items)[("ns", "bucket", "k")].name == "newest"


def test_the_newest_event_and_equal_or_unordered_events_are_not_superseded() -> None:
    assert queue.superseded([_seq("a", "10"), _seq("b", "010")]) == {}  # same event twice
    assert queue.superseded([_seq("only", "5")]) == {}
    assert queue.superseded([_seq("new", "B"), _seq("old", "A")]) == {"old": "new"}
    assert queue.superseded([_seq("x", ""), _seq("y", "")]) == {}
    other_namespace = queue.Sequenced("far", ("elsewhere", "bucket", "k"), "1", True)
    assert queue.superseded([other_namespace, _seq("near", "2")]) == {}


def test_budget_allows_a_burst_then_the_rate() -> None:
    budget = queue.Budget(rate=5.0, burst=2.0)
    assert budget.take(100.0) and budget.take(100.0)
    assert not budget.take(100.0)  # burst spent
    assert not budget.take(100.1)  # half a token
    assert budget.take(100.2)  # 0.2 s at 5/s: one token
    assert budget.take(110.0) and budget.take(110.0) and not budget.take(110.0)  # never above burst
