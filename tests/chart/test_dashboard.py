"""The Grafana dashboard the chart ships: off by default; a ConfigMap with the sidecar's label; valid
dashboard JSON whose every panel queries metrics crawljob really exports."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from chart_render import VALUES_ALL, of_kind, render

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_metrics_docs import exported

SUFFIXES = ("_bucket", "_sum", "_count")
REQUIRED_PANELS = {
    "Arrivals": "crawljob_receiver_events_total",
    "Queue length": "crawljob_queue_length",
    "Active Jobs": "crawljob_active_jobs",
    "Outcomes by reason": "crawljob_transitions_total",
    "Rows per second": "crawljob_rows_total",
    "Event to start latency": "crawljob_event_to_start_seconds",
}


def dashboards(sets: list[str] | None = None, values: list[Path] | None = None) -> list[dict[str, Any]]:
    return [
        m
        for m in of_kind(render(values or [], sets or []), "ConfigMap")
        if m["metadata"]["name"].endswith("-dashboard")
    ]


def metric_names(expr: str) -> set[str]:
    names = set()
    for name in re.findall(r"\bcrawljob_[a-z_]+", expr):
        for suffix in SUFFIXES:
            name = (
                name.removesuffix(suffix) if name.endswith(suffix) and not name.endswith("_total") else name
            )
        names.add(name)
    return names


def test_the_dashboard_is_off_by_default_and_labelled_for_the_sidecar_when_on() -> None:
    assert dashboards() == []
    [configmap] = dashboards(values=[VALUES_ALL])
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "crawljob"}
    [custom] = dashboards(["metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.label=dash"])
    assert custom["metadata"]["labels"]["dash"] == "1"


def test_every_panel_queries_metrics_crawljob_exports() -> None:
    [configmap] = dashboards(["metrics.grafanaDashboard.enabled=true"])
    dashboard = json.loads(configmap["data"]["crawljob.json"])
    known = exported()
    histograms = {name for name in known if not name.endswith("_total")}
    assert dashboard["uid"] and dashboard["title"] == "crawljob"
    titles: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        used: set[str] = set()
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, target["expr"]
            assert names <= known, (panel["title"], names - known)
            if "_bucket" in target["expr"]:
                assert names <= histograms
            used |= names
        titles[panel["title"]] = used
    for prefix, metric in REQUIRED_PANELS.items():
        assert any(title.startswith(prefix) and metric in used for title, used in titles.items()), prefix
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
