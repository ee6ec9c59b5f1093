"""Sweep decisions: schedule, which objects get a CrawlJob, the watermark, GC protection, status."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from crawljob import resource
from crawljob.operator import sweep
from crawljob.sources import ANNOTATION_SWEEP, Source

T0 = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_condition(items: list[dict[str, Any]], type_: str) -> dict[str, Any]:
    return next(item for item in items if item["type"] == type_)


def is_true(items: list[dict[str, Any]], type_: str) -> bool:
    return get_condition(items, type_)["status"] == "True"


SOURCE = Source("ns", "feed", "data", prefix="in/", suffixes=(".csv",), interval_seconds=600.0, generation=2)


def test_a_new_source_is_swept_at_once_then_on_the_written_schedule() -> None:
    assert sweep.due_at(SOURCE, {}, None, T0) == T0
    status = {"observedGeneration": 2, "nextSweepTime": stamp(300)}
    assert sweep.due_at(SOURCE, status, None, T0) == at(300)


def test_a_changed_spec_or_a_new_annotation_sweeps_now_and_a_seen_one_does_not() -> None:
    status = {"observedGeneration": 1, "nextSweepTime": stamp(300)}
    assert sweep.due_at(SOURCE, status, None, T0) == T0
    status = {"observedGeneration": 2, "nextSweepTime": stamp(300), "sweepToken": "a"}
    assert sweep.due_at(SOURCE, status, {ANNOTATION_SWEEP: "b"}, T0) == T0
    assert sweep.due_at(SOURCE, status, {ANNOTATION_SWEEP: "a"}, T0) == at(300)


def test_suspended_and_webhook_only_sources_are_never_due_on_their_own() -> None:
    suspended = Source("ns", "feed", "data", suspend=True, generation=1)
    assert sweep.due_at(suspended, {}, {ANNOTATION_SWEEP: "now"}, T0) is None
    webhook_only = Source("ns", "feed", "data", interval_seconds=0, generation=1)
    assert sweep.due_at(webhook_only, {"observedGeneration": 1}, None, T0) is None
    assert sweep.due_at(webhook_only, {"observedGeneration": 1}, {ANNOTATION_SWEEP: "x"}, T0) == T0
    assert sweep.next_sweep_time(webhook_only, T0) is None


def test_jitter_is_stable_per_source_and_bounded() -> None:
    values = {sweep.jitter_seconds("ns", f"s{i}", 600.0) for i in range(50)}
    assert all(0 <= value < 60.0 for value in values)
    assert len(values) == 50  # spread
    assert sweep.jitter_seconds("ns", "s1", 600.0) == sweep.jitter_seconds("ns", "s1", 600.0)
    assert sweep.jitter_seconds("ns", "s1", 86400.0) < sweep.JITTER_MAX_SECONDS
    assert at(600) <= sweep.next_sweep_time(SOURCE, T0) < at(660)  # type: ignore[operator]


def test_objects_below_the_watermark_or_since_or_already_crawled_get_no_crawljob() -> None:
    fresh = sweep.Listed("in/a.csv", at(10), etag='"e1"')
    old = sweep.Listed("in/b.csv", at(-10), etag='"e2"')
    other = sweep.Listed("in/c.json", at(10), etag='"e3"')
    bound = sweep.lower_bound(SOURCE, T0)
    assert sweep.wanted(SOURCE, fresh, bound, set()) == (True, True)
    assert sweep.wanted(SOURCE, old, bound, set()) == (False, False)
    assert sweep.wanted(SOURCE, other, bound, set()) == (False, False)
    existing = {resource.crawljob_name(fresh.ref("data"))}
    assert sweep.wanted(SOURCE, fresh, bound, existing) == (True, False)
    since = Source("ns", "feed", "data", prefix="in/", since=at(20))
    assert sweep.lower_bound(since, T0) == at(20)


def test_a_listed_version_names_the_crawljob_as_its_event_would() -> None:
    # Unversioned: the event carries the eTag (unquoted); versioned: the versionId; "null" is no version.
    plain = sweep.Listed("in/a.csv", T0, etag='"abc"', size=5).ref("data")
    assert resource.crawljob_name(plain) == resource.crawljob_name(
        resource.ObjectRef("data", "in/a.csv", etag="abc")
    )
    versioned = sweep.Listed("in/a.csv", T0, etag='"abc"', version_id="v1").ref("data")
    assert resource.crawljob_name(versioned) == resource.crawljob_name(
        resource.ObjectRef("data", "in/a.csv", version_id="v1", etag="abc", sequencer="0055")
    )
    assert sweep.Listed("in/a.csv", T0, etag='"abc"', version_id="null").ref("data").version_id is None


def test_the_watermark_trails_the_sweep_start_by_the_lookback_and_never_moves_back() -> None:
    assert sweep.advanced_watermark(None, at(1000), 300) == at(700)
    assert sweep.advanced_watermark(at(900), at(1000), 300) == at(900)


def test_a_lookback_reaching_the_crawljob_ttl_is_refused() -> None:
    sweep.check_lookback(3599, 3600)
    sweep.check_lookback(3600, None)
    with pytest.raises(ValueError, match="shorter than --finished-ttl-seconds"):
        sweep.check_lookback(3600, 3600)


def crawljob(name: str, key: str, created: float, label: str | None = None) -> dict[str, Any]:
    labels = {"crawljob.io/source": label} if label else {}
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": stamp(created), "labels": labels},
        "spec": {"source": {"bucket": "data", "key": key}},
    }


def test_gc_keeps_the_crawljobs_a_sweep_still_looks_at() -> None:
    sources = [SOURCE]
    watermarks = {"feed": stamp(0)}
    assert sweep.protected_from_gc(crawljob("a", "in/a.csv", 10), sources, watermarks)
    assert not sweep.protected_from_gc(crawljob("b", "in/b.csv", -10), sources, watermarks)
    assert not sweep.protected_from_gc(crawljob("c", "elsewhere/c.csv", 10), sources, watermarks)
    assert sweep.protected_from_gc(crawljob("d", "in/d.csv", -10), sources, {})  # no sweep completed yet
    webhook_only = [Source("ns", "feed", "data", prefix="in/", interval_seconds=0)]
    assert not sweep.protected_from_gc(crawljob("e", "in/e.csv", 10), webhook_only, watermarks)


def test_status_after_a_complete_pass_moves_the_watermark_and_schedules_the_next() -> None:
    result = sweep.PassResult(started=at(0), listed=5, matched=3, created=["x", "y"], complete=True)
    patch = sweep.status_after_pass(SOURCE, {"crawljobsCreatedTotal": 4}, result, "tok", 60, at(2))
    assert patch["watermark"] == stamp(-60)
    assert patch["lastSweepTime"] == stamp(2)
    assert patch["crawljobsCreated"] == 2 and patch["crawljobsCreatedTotal"] == 6
    assert patch["sweepToken"] == "tok" and patch["resumeAfter"] is None
    assert is_true(patch["conditions"], "Ready")
    assert not is_true(patch["conditions"], "Stalled")


def test_a_capped_pass_continues_soon_from_where_it_stopped_and_keeps_the_watermark() -> None:
    result = sweep.PassResult(started=at(0), created=["x"], capped=True, resume_after="in/k.csv")
    patch = sweep.status_after_pass(SOURCE, {"watermark": stamp(-500)}, result, None, 60, at(1))
    assert "watermark" not in patch and patch["resumeAfter"] == "in/k.csv"
    assert patch["sweepStartTime"] == stamp(0)
    assert is_true(patch["conditions"], "Reconciling")
    # The continuation that completes uses the first pass's start for the watermark.
    resumed = {"resumeAfter": "in/k.csv", "sweepStartTime": stamp(0)}
    done = sweep.PassResult(started=at(100), complete=True)
    assert sweep.status_after_pass(SOURCE, resumed, done, None, 60, at(101))["watermark"] == stamp(-60)


@pytest.mark.parametrize(
    ("code", "stalled"),
    [("AccessDenied", True), ("NoSuchBucket", True), ("Unavailable", False), ("SlowDown", False)],
)
def test_listing_errors_stall_or_retry_by_their_code(code: str, stalled: bool) -> None:
    result = sweep.PassResult(started=at(0), error_code=code, error_message="no")
    patch = sweep.status_after_pass(SOURCE, {}, result, None, 60, at(1))
    assert is_true(patch["conditions"], "Stalled") is stalled
    assert get_condition(patch["conditions"], "Ready")["reason"] == code  # type: ignore[index]
    assert "watermark" not in patch
    retry = 600 if stalled else sweep.RETRY_SECONDS
    assert patch["nextSweepTime"] == stamp(1 + retry)
