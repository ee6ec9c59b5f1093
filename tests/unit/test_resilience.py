"""Decisions for the control plane's faults: kopf's retry delays, liveness, watch-restart messages."""

from __future__ import annotations

import asyncio
import collections.abc
import itertools
import logging

import pytest

from crawljob import flags
from crawljob.operator import resilience
from crawljob.operator import settings as config


def test_backoffs_grow_to_the_cap_and_never_run_out() -> None:
    backoffs = resilience.CappedBackoffs(first=1.0, cap=10.0)
    assert list(itertools.islice(backoffs, 7)) == [1, 2, 4, 8, 10, 10, 10]
    # kopf counts attempts only for sized iterables: unsized means "retry without end".
    assert not isinstance(backoffs, collections.abc.Sized)
    assert list(itertools.islice(backoffs, 10_000))[-1] == 10


def test_backoffs_start_over_for_every_request() -> None:
    # kopf iterates settings.networking.error_backoffs once per API request: a generator would be
    # exhausted by the first request and leave every later one without a single retry.
    backoffs = resilience.CappedBackoffs(first=0.5, cap=3.0)
    first = list(itertools.islice(backoffs, 4))
    assert list(itertools.islice(backoffs, 4)) == first == [0.5, 1.0, 2.0, 3.0]


def test_kopf_would_retry_them_without_end() -> None:
    # The same arithmetic as kopf's api.request: count is None for an unsized iterable.
    effective = resilience.CappedBackoffs()
    count = len(effective) + 1 if isinstance(effective, collections.abc.Sized) else None
    assert count is None


def test_backoff_delay_after_n_failures() -> None:
    backoffs = resilience.CappedBackoffs(first=1.0, cap=5.0)
    assert [backoffs.delay(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize(("first", "cap", "factor"), [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_invalid_backoffs_are_refused(first: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError, match="invalid backoffs"):
        resilience.CappedBackoffs(first=first, cap=cap, factor=factor)


def test_liveness_fails_only_past_its_limit_and_recovers_with_the_next_progress() -> None:
    assert resilience.liveness(now=1000.0, progress_at=800.0, limit=300.0).healthy
    stale = resilience.liveness(now=1000.0, progress_at=600.0, limit=300.0)
    assert not stale.healthy and stale.age == 400.0
    # One successful resync later: healthy at once, whatever the outage's length.
    assert resilience.liveness(now=1001.0, progress_at=1000.5, limit=300.0).healthy


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Watch-stream for pods.v1 in 't-1' is inactive, reconnecting.",
            resilience.WatchRestart("pods.v1", "inactive"),
        ),
        (
            "Restarting the watch-stream for jobs.v1.batch in 'ns'.",
            resilience.WatchRestart("jobs.v1.batch", "expired"),
        ),
        (
            "Starting the watch-stream for crawljobs.v1alpha1.crawljob.io cluster-wide.",
            resilience.WatchRestart("crawljobs.v1alpha1.crawljob.io", "started"),
        ),
        ("Stopping the watch-stream for pods.v1 in 'ns'.", None),
        ("Request attempt #3 failed; will retry", None),
    ],
)
def test_kopf_watch_messages(message: str, expected: resilience.WatchRestart | None) -> None:
    assert resilience.watch_restart(message) == expected


async def test_watch_log_filter_promotes_restarts_to_info_and_counts_them() -> None:
    from crawljob.operator import health

    probe = health.Health(config.OperatorSettings())
    watch_filter = health.WatchLogFilter(probe)

    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord(health.KOPF_WATCH_LOGGER, level, __file__, 1, message, None, None)

    restart = record(logging.DEBUG, "Watch-stream for pods.v1 in 'ns' is inactive, reconnecting.")
    assert watch_filter.filter(restart) and restart.levelname == "INFO"
    assert not watch_filter.filter(record(logging.DEBUG, "Stopping the watch-stream for pods.v1 in 'ns'."))
    assert watch_filter.filter(record(logging.ERROR, "Request attempt #9 failed; will retry"))
    counted = probe.registry.get_sample_value(
        "crawljob_watch_restarts_total", {"resource": "pods.v1", "reason": "inactive"}
    )
    assert counted == 1.0


def settings_of(*argv: str) -> config.OperatorSettings:
    return config.operator_settings(flags.parse(config.operator_parser({}), list(argv)))


def test_fault_settings_default_and_parse() -> None:
    defaults = settings_of()
    assert (defaults.liveness_seconds, defaults.watch_inactivity_seconds) == (300.0, 70.0)
    parsed = settings_of("--liveness-seconds", "90", "--watch-inactivity-seconds", "15")
    assert (parsed.liveness_seconds, parsed.watch_inactivity_seconds) == (90.0, 15.0)
    env = config.operator_settings(
        flags.parse(config.operator_parser({"CRAWLJOB_LIVENESS_SECONDS": "120"}), [])
    )
    assert env.liveness_seconds == 120.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--liveness-seconds", "soon"], "--liveness-seconds must be a number"),
        (["--liveness-seconds", "0"], "--liveness-seconds must be positive"),
        (["--liveness-seconds", "20", "--resync-seconds", "30"], "must be longer than --resync-seconds"),
        (["--watch-inactivity-seconds", "-1"], "--watch-inactivity-seconds must be positive"),
    ],
)
def test_bad_fault_settings_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_of(*argv)


async def test_supervise_restarts_a_failed_run_until_it_returns() -> None:
    from crawljob.operator import app, health

    probe = health.Health(config.OperatorSettings())
    calls: list[float] = []

    async def run() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) < 3:
            raise RuntimeError("watcher failed: Error in the watch-stream")  # as kopf's run ends

    await app.supervise(run, probe, resilience.CappedBackoffs(first=0.05, cap=0.1))
    assert len(calls) == 3
    assert probe.registry.get_sample_value("crawljob_kopf_run_restarts_total") == 2.0
    assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.1  # backed off, capped


async def test_supervise_does_not_swallow_a_stop() -> None:
    from crawljob.operator import app, health

    probe = health.Health(config.OperatorSettings())

    async def run() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await app.supervise(run, probe, resilience.CappedBackoffs(first=0.05, cap=0.1))
    assert probe.registry.get_sample_value("crawljob_kopf_run_restarts_total") == 0.0
