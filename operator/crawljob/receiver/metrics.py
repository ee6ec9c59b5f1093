"""The receiver's Prometheus metrics, in a registry of their own (one per app, so tests can run many)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Milliseconds matter here: EventBridge gives up after 5 s, the goal is a p99 under 20 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ReceiverMetrics:
    """Counters and histograms the receiver updates; `render()` gives the /metrics text."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        self.events = Counter(
            "crawljob_receiver_events",
            "Objects named by webhook events, by format and outcome "
            "(created, duplicate, ignored, failed, refused)",
            ["format", "outcome"],
            registry=self.registry,
        )
        self.requests = Counter(
            "crawljob_receiver_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crawljob_receiver_request_duration_seconds",
            "Time to answer a request, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.api_errors = Counter(
            "crawljob_receiver_kube_api_errors",
            "Kubernetes API calls that failed, by kind (unavailable, invalid, other)",
            ["kind"],
            registry=self.registry,
        )
        self.sns = Counter(
            "crawljob_receiver_sns_messages",
            "SNS envelopes by type and outcome (accepted, confirmed, refused, unavailable)",
            ["type", "outcome"],
            registry=self.registry,
        )

        self.collisions = Counter(
            "crawljob_receiver_name_collisions",
            "CrawlJob names found held by a different object (the CrawlJob took the next name)",
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
