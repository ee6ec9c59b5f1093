"""Prometheus metrics of the operator, in their own registry (one per operator instance).

One prefix scheme: everything the operator exports is `crawljob_*` (CrawlJobs, their Jobs, rows and
bytes, its API calls, its replica role); the receiver's are `crawljob_receiver_*`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from crawljob import resource


class _PhaseCollector:
    """`crawljob_crawljobs{phase}` counted from the operator's view at scrape time, so it is as
    current as the watch (not as old as the last resync)."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("crawljob_crawljobs", "CrawlJobs by phase", labels=["phase"])
        counts = dict(self.metrics.phase_counts())
        for phase in (*resource.PHASES, *sorted(set(counts) - set(resource.PHASES))):
            family.add_metric([phase], counts.get(phase, 0))
        yield family


@dataclass
class OperatorMetrics:
    """CrawlJobs by phase, transitions, durations, queue length, Job creations, event→start lag."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # CrawlJobs by phase right now; the operator's State sets it to count its view.
    phase_counts: Callable[[], Mapping[str, int]] = field(default=lambda: {})

    def __post_init__(self) -> None:
        self.registry.register(_PhaseCollector(self))
        self.transitions = Counter(
            "crawljob_transitions_total",
            "Phase transitions of CrawlJobs",
            ["phase", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "crawljob_duration_seconds",
            "Job start to terminal phase, by outcome",
            ["phase"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=self.registry,
        )
        self.queue_length = Gauge(
            "crawljob_queue_length", "CrawlJobs waiting for a slot", registry=self.registry
        )
        self.active = Gauge(
            "crawljob_active_jobs", "Jobs holding a slot under the cap", registry=self.registry
        )
        self.jobs_created = Counter(
            "crawljob_jobs_created_total", "Jobs created (adopted ones not counted)", registry=self.registry
        )
        self.jobs_adopted = Counter(
            "crawljob_jobs_adopted_total", "Existing Jobs adopted after a conflict", registry=self.registry
        )
        self.start_lag = Histogram(
            "crawljob_event_to_start_seconds",
            "From the S3 event time to the Job's creation",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.rows = Counter(
            "crawljob_rows_total",
            "Rows of finished crawls by outcome (written, rejected), counted when a run succeeds",
            ["outcome"],
            registry=self.registry,
        )
        self.bytes_read = Counter(
            "crawljob_bytes_read_total",
            "Bytes of source objects read by successful runs",
            registry=self.registry,
        )
        self.notifications = Counter(
            "crawljob_notifications_total",
            "Completion CloudEvents POSTed to notification sinks, by outcome (delivered, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.api_errors = Counter(
            "crawljob_kube_api_errors_total",
            "Kubernetes API calls that failed",
            ["operation"],
            registry=self.registry,
        )
        self.garbage_collected = Counter(
            "crawljob_garbage_collected_total",
            "Finished CrawlJobs deleted by TTL or history limits",
            registry=self.registry,
        )
