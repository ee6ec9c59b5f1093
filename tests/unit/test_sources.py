"""The CrawlSource model: durations, validation naming the field, key matching, routing, templates."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from crawljob import resource
from crawljob.sources import (
    LABEL_SOURCE,
    InvalidSource,
    Source,
    apply_source,
    parse_duration,
    select_source,
    source_from_body,
)


def body(name: str = "feed", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "generation": 3},
        "spec": {"bucket": "data", **spec},
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("90s", 90.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("2h", 7200.0),
    ],
)
def test_go_durations_are_read_in_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10 m", "-5m", "1d", "1h-3m", "0s0"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_source_without_interval_sweeps_every_ten_minutes() -> None:
    source = source_from_body(body(prefix="in/"))
    assert source.interval_seconds == 600.0
    assert source.sweeps and source.generation == 3 and source.namespace == "ns"


def test_interval_zero_and_suspend_turn_sweeps_off() -> None:
    assert not source_from_body(body(interval="0")).sweeps
    assert not source_from_body(body(suspend=True)).sweeps


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"interval": "soon"}, "interval"),
        ({"interval": "100ms"}, "interval"),
        ({"since": "yesterday"}, "since"),
        ({"suffixes": [".csv", ""]}, "suffixes"),
        ({"exclude": "*.tmp"}, "exclude"),
        ({"template": {"source": {"bucket": "x", "key": "y"}}}, "template"),
        ({"template": ["output"]}, "template"),
        ({"bucket": ""}, "bucket"),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSource) as caught:
        source_from_body(body(**spec))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"spec.{field}:")


def test_keys_match_by_prefix_suffix_and_exclude_and_folders_never() -> None:
    source = Source("ns", "feed", "data", prefix="in/", suffixes=(".csv", ".csv.gz"), exclude=("*/_tmp/*",))
    assert source.matches("data", "in/a.csv")
    assert source.matches("data", "in/deep/b.csv.gz")
    assert not source.matches("other", "in/a.csv")
    assert not source.matches("data", "out/a.csv")
    assert not source.matches("data", "in/a.json")
    assert not source.matches("data", "in/x/_tmp/a.csv")
    assert not source.matches("data", "in/folder.csv/")


def test_the_longest_prefix_wins_and_ties_go_to_the_first_name() -> None:
    broad = Source("ns", "all", "data", prefix="")
    narrow = Source("ns", "invoices", "data", prefix="in/invoices/")
    twin_b = Source("ns", "b-in", "data", prefix="in/")
    twin_a = Source("ns", "a-in", "data", prefix="in/")
    candidates = [broad, twin_b, narrow, twin_a]
    assert select_source(candidates, "data", "in/invoices/1.csv") is narrow
    assert select_source(candidates, "data", "in/orders/1.csv") is twin_a
    assert select_source(candidates, "data", "elsewhere.csv") is broad
    assert select_source(candidates, "other", "in/1.csv") is None


def test_a_template_sets_crawljob_spec_fields_and_the_label_but_never_the_object() -> None:
    source = source_from_body(
        body(template={"output": {"format": "jsonl"}, "maxRejectRatio": 0.5, "csv": {"delimiter": ";"}})
    )
    manifest = resource.crawljob_manifest(resource.ObjectRef("data", "in/a.csv", etag="abc"), "ns")
    routed = apply_source(manifest, source)
    assert routed["spec"]["source"] == manifest["spec"]["source"]  # type: ignore[index]
    assert routed["spec"]["output"] == {"format": "jsonl"}
    assert routed["spec"]["maxRejectRatio"] == 0.5
    assert routed["metadata"]["labels"][LABEL_SOURCE] == "feed"
    assert routed["metadata"]["name"] == manifest["metadata"]["name"]  # type: ignore[index]
    assert LABEL_SOURCE not in manifest["metadata"]["labels"]  # type: ignore[index]


def test_since_is_an_aware_time() -> None:
    source = source_from_body(body(since="2026-01-02T03:04:05Z"))
    assert source.since == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
