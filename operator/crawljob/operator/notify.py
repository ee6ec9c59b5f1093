"""Completion signal, sent: CloudEvents 1.0 (structured JSON, built with the `cloudevents` SDK) over
HTTP POST to each sink a finished CrawlJob owes one (completion.py decides which).

A loop of the active replica (standby.Gate starts it with the others) looks at the operator's view
twice a second; an event is recorded in status.notifications once its sink answered 2xx, so after a
restart only unrecorded ones are sent (again, with the same id). Failures are retried with
exponential backoff; after WARN_AFTER_FAILURES in a row a Warning Event `NotificationFailing` says so
on the CrawlJob (once), and the retries go on.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass

import aiohttp
from cloudevents.core.bindings import http as cloudevents_http
from cloudevents.core.v1.event import CloudEvent

from crawljob import kube
from crawljob.models import Body, Key
from crawljob.operator import completion, view, writes
from crawljob.times import utc_now

log = logging.getLogger("crawljob.operator")

SCAN_SECONDS = 0.5
SEND_TIMEOUT_SECONDS = 10.0


@dataclass
class Attempts:
    """Consecutive failures of one event to one sink, and when to try again."""

    failures: int = 0
    next_at: float = 0.0
    warned: bool = False


def render(crawljob: Body) -> tuple[dict[str, str], bytes]:
    """(headers, body) of the structured-mode CloudEvent of the CrawlJob's outcome."""
    attributes, data = completion.event(crawljob)
    message = cloudevents_http.to_structured_event(CloudEvent(attributes, data))
    return dict(message.headers), bytes(message.body)


async def send(session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes) -> str | None:
    """POST one event; None when the sink acknowledged it (2xx), else why not."""
    try:
        timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_SECONDS)
        async with session.post(url, data=body, headers=headers, timeout=timeout) as answer:
            if 200 <= answer.status < 300:
                return None
            return f"the sink answered {answer.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"the sink cannot be reached: {exc or type(exc).__name__}"


async def deliver_owed(
    state: view.State, session: aiohttp.ClientSession, attempts: dict[tuple[Key, str, str], Attempts]
) -> None:
    """One pass: send what is owed and due, record what was acknowledged."""
    now = time.monotonic()
    wall = datetime.datetime.now(tz=datetime.UTC)
    for key, model in list(state.crawljobs.items()):
        crawljob = model.body
        for url in completion.owed(crawljob, state.settings.notify_sinks, wall):
            identity = completion.event_id(crawljob)
            attempt = attempts.setdefault((key, url, identity), Attempts())
            if attempt.next_at > now:
                continue
            headers, body = render(crawljob)
            problem = await send(session, url, headers, body)
            if problem is None:
                state.metrics.notifications.labels("delivered").inc()
                attempts.pop((key, url, identity), None)
                await _record(state, key, url)
                continue
            state.metrics.notifications.labels("failed").inc()
            attempt.failures += 1
            attempt.next_at = now + completion.retry_delay(
                attempt.failures, state.settings.notify_retry_seconds
            )
            log.warning(
                "%s: CloudEvent %s not delivered (attempt %d): %s",
                key[1],
                identity,
                attempt.failures,
                problem,
            )
            if attempt.failures >= completion.WARN_AFTER_FAILURES and not attempt.warned:
                attempt.warned = True
                message = (
                    f"the completion event {identity} was not delivered to a notification sink after "
                    f"{attempt.failures} attempts ({problem}); still retrying"
                )
                await writes.post_event(state, model.meta, "NotificationFailing", message, warning=True)


async def _record(state: view.State, key: Key, url: str) -> None:
    """Write that *url* acknowledged the current outcome (a lost write means a resend, same id)."""
    known = state.crawljobs.get(key)
    if known is None:
        return
    patch = {"status": {"notifications": completion.recorded(known.body, url, utc_now())}}
    try:
        updated = await state.client.patch(kube.CRAWLJOBS, key[0], key[1], patch, "status")
    except kube.KubeError as exc:
        state.metrics.api_errors.labels("notifications").inc()
        log.warning("%s: cannot record the delivered CloudEvent: %s", key[1], exc)
        return
    if updated.get("metadata"):
        state.remember_crawljob(updated)


async def notify_loop(state: view.State) -> None:
    """Deliver completion events for as long as this replica is active (no sinks: nothing to do,
    unless a CrawlJob names its own)."""
    attempts: dict[tuple[Key, str, str], Attempts] = {}
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                await deliver_owed(state, session, attempts)
            except Exception:  # one bad CrawlJob must not end the completion signal of the others
                log.exception("notifications: the delivery pass failed; retrying")
            await asyncio.sleep(SCAN_SECONDS)
