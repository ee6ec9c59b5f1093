"""Which completion CloudEvents a CrawlJob still owes, and what they say (pure)."""

from __future__ import annotations

import datetime
from typing import Any

from crawljob.operator import completion

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def _crawljob(phase: str, finished: str = "2026-12-02T11:59:00Z", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "day1-csv-0123456789", "namespace": "crawls", "uid": "u-1"},
        "spec": {"source": {"bucket": "b", "key": "day1.csv"}, "notify": {"sinks": ["http://own/"]}},
        "status": {"phase": phase, "reason": "Completed", "completionTime": finished, **status},
    }


def test_a_finished_crawljob_owes_each_sink_once_and_a_rerun_owes_again() -> None:
    done = _crawljob("Succeeded")
    assert completion.owed(done, ["http://shared/", "http://own/"], NOW) == ["http://shared/", "http://own/"]
    delivered = {
        **done,
        "status": {**done["status"], "notifications": completion.recorded(done, "http://own/", "t")},
    }
    assert completion.owed(delivered, ["http://shared/"], NOW) == ["http://shared/"]
    assert completion.event_id(done) == "u-1.1.succeeded"
    rerun = {**delivered, "status": {**delivered["status"], "run": 2, "phase": "Failed"}}
    assert completion.event_id(rerun) == "u-1.2.failed"
    assert completion.owed(rerun, [], NOW) == ["http://own/"]  # the record is of run 1


def test_nothing_is_owed_before_the_end_or_long_after_it() -> None:
    assert completion.owed(_crawljob("Running"), ["http://s/"], NOW) == []
    assert completion.owed(_crawljob("Cancelled"), ["http://s/"], NOW) == []
    assert completion.owed(_crawljob("Failed", "2026-11-30T00:00:00Z"), ["http://s/"], NOW) == []


def test_the_event_names_the_crawljob_and_its_outcome_and_hides_sink_urls() -> None:
    attributes, data = completion.event(_crawljob("Failed", reason="BadInput"))
    assert attributes["type"] == "io.crawljob.crawljob.failed"
    assert (
        attributes["source"] == "/apis/crawljob.io/v1alpha1/namespaces/crawls/crawljobs/day1-csv-0123456789"
    )
    assert attributes["time"] == datetime.datetime(2026, 12, 2, 11, 59, tzinfo=datetime.UTC)
    assert data["reason"] == "BadInput" and data["source"] == {"bucket": "b", "key": "day1.csv"}
    record = completion.recorded(_crawljob("Failed"), "https://user:token@sink/", "t")
    assert "token" not in str(record)
    assert [completion.retry_delay(n, 1.0) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 300.0]
