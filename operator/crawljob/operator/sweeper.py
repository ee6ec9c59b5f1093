"""CrawlSource sweeps: a thin I/O loop around the decisions in `sweep`.

One loop for all sources, run only on the active replica (started by `standby.Gate`): it sweeps
the source due first, one pass at a time, and sleeps until the next is due or a CrawlSource changes
(kopf's watch feeds `State.sources`). Each pass lists the prefix (`s3list`), creates the CrawlJob of
every matching object above the watermark that the operator's view lacks (same name as the
webhook's), at most `--sweep-max-create` minus the source's unfinished CrawlJobs per pass, and
writes the status (the schedule lives there, so a restart causes no burst of sweeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Container, Mapping
from typing import Any

from crawljob import kube, resource, sources
from crawljob.models import Body, CrawlJob, Key, Meta, key_of
from crawljob.operator import events, sweep
from crawljob.operator.s3list import ListingError, S3Lister
from crawljob.operator.view import State, log
from crawljob.times import parse_time

# CrawlSources are re-listed this often even without watch events (a missed event, a takeover).
REFRESH_SECONDS = 60.0


class _Names(Container[str]):
    """The names of the CrawlJobs the operator's view holds in one namespace (no copy)."""

    def __init__(self, crawljobs: Mapping[Key, CrawlJob], namespace: str) -> None:
        self.crawljobs = crawljobs
        self.namespace = namespace

    def __contains__(self, name: object) -> bool:
        return (self.namespace, name) in self.crawljobs


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


class Sweeper:
    """Sweeps the CrawlSources of `state.sources` when due."""

    def __init__(self, state: State, lister: S3Lister | None = None) -> None:
        self.state = state
        self.lister = lister or S3Lister()
        self.refreshed_at = float("-inf")
        # Sources whose status could not be written: not swept again before this (wall clock), so
        # a status the API refuses never turns into a pass every few seconds.
        self.held_until: dict[Key, datetime.datetime] = {}

    async def run(self) -> None:
        """Forever: refresh the sources when stale, sweep the one due first, sleep until the next."""
        state = self.state
        self.refreshed_at = float("-inf")  # each activation starts from a fresh list
        while True:
            if time.monotonic() - self.refreshed_at >= REFRESH_SECONDS:
                await self.refresh()
            now = utc_now()
            due: list[tuple[datetime.datetime, Key]] = []
            for key, body in list(state.sources.items()):
                when = self.due(body, now)
                held = self.held_until.get(key)
                if when is not None and held is not None and held > when:
                    when = held
                if when is not None:
                    due.append((when, key))
            due.sort()
            if due and due[0][0] <= now:
                try:
                    await self.sweep_source(due[0][1])
                except Exception:
                    log.exception("sweep of %s failed unexpectedly (will retry)", due[0][1][1])
                    await asyncio.sleep(sweep.RETRY_SECONDS)
                continue
            delay = REFRESH_SECONDS if not due else (due[0][0] - now).total_seconds()
            state.sources_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.sources_changed.wait(), max(0.05, min(delay, REFRESH_SECONDS)))

    def due(self, body: Mapping[str, Any], now: datetime.datetime) -> datetime.datetime | None:
        status = body.get("status") or {}
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        try:
            source = sources.source_from_body(body)
        except sources.InvalidSource:
            generation = (body.get("metadata") or {}).get("generation")
            written = status.get("observedGeneration") == generation and not sweep.sweep_requested(
                annotations, status
            )
            return None if written else now
        idle = source.suspend or (source.interval_seconds <= 0 and not status.get("resumeAfter"))
        # Nothing to sweep: write the Suspended/SweepDisabled status once per generation.
        if idle and (status.get("observedGeneration") != source.generation or status.get("nextSweepTime")):
            return now
        return sweep.due_at(source, status, annotations, now)

    async def refresh(self) -> None:
        """Re-list the CrawlSources (kopf's watch keeps them current between refreshes)."""
        try:
            items = await self.state.client.list(kube.CRAWLSOURCES, self.state.settings.namespace)
        except kube.KubeError as exc:
            log.warning("cannot list CrawlSources (sweeps wait; will retry): %s", exc)
            self.refreshed_at = time.monotonic()
            return
        seen = {key_of(item) for item in items}
        for item in items:
            remember_source(self.state, item)
        for key in list(self.state.sources):
            if key not in seen:
                self.state.sources.pop(key, None)
        self.refreshed_at = time.monotonic()

    async def sweep_source(self, key: Key) -> sweep.PassResult | None:
        """One pass of one source (or the status of a source that must not be swept)."""
        body = self.state.sources.get(key)
        if body is None:
            return None
        now = utc_now()
        current = body.get("status") or {}
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        generation = (body.get("metadata") or {}).get("generation")
        try:
            source = sources.source_from_body(body)
        except sources.InvalidSource as exc:
            patch = sweep.invalid_status(
                current, generation if isinstance(generation, int) else None, str(exc), now
            )
            token = sweep.sweep_requested(annotations, current)
            if token is not None:
                patch["sweepToken"] = token
            await self.write_status(body, patch)
            await self.post_event(body, "InvalidSpec", str(exc), warning=True)
            return None
        if source.suspend or (
            source.interval_seconds <= 0
            and not sweep.sweep_requested(annotations, current)
            and not current.get("resumeAfter")
        ):
            await self.write_status(body, sweep.suspended_status(current, source, now))
            return None
        token = sweep.sweep_requested(annotations, current)
        result = await self.run_pass(source, current)
        patch = sweep.status_after_pass(
            source, current, result, token, self.state.settings.sweep_lookback_seconds, utc_now()
        )
        await self.write_status(body, patch)
        if result.error_code is not None:
            await self.post_event(body, "SweepFailed", str(patch.get("message")), warning=True)
        elif result.created:
            shown = ", ".join(result.created[:5]) + (", …" if len(result.created) > 5 else "")
            await self.post_event(
                body, "CrawlJobsCreated", f"{len(result.created)} CrawlJobs created: {shown}", warning=False
            )
        if result.collisions:
            await self.post_event(
                body,
                "NameCollision",
                f"CrawlJobs named {', '.join(result.collisions[:5])} exist for other objects; delete them to crawl these",
                warning=True,
            )
        log.info(
            "sweep %s/%s: %d listed, %d matched, %d created%s",
            source.namespace,
            source.name,
            result.listed,
            result.matched,
            len(result.created),
            f" (error {result.error_code})" if result.error_code else (" (capped)" if result.capped else ""),
        )
        return result

    def budget(self, source: sources.Source) -> int:
        """CrawlJobs this pass may create: the cap less the source's unfinished ones (backpressure)."""
        unfinished = sum(
            1
            for (namespace, _), crawljob in self.state.crawljobs.items()
            if namespace == source.namespace
            and crawljob.meta.labels.get(sources.LABEL_SOURCE) == source.name
            and not crawljob.status.terminal
        )
        return max(0, self.state.settings.sweep_max_create - unfinished)

    async def run_pass(self, source: sources.Source, current: Mapping[str, Any]) -> sweep.PassResult:
        started = utc_now()
        clock = time.monotonic()
        result = sweep.PassResult(started=started)
        budget = self.budget(source)
        start_after = current.get("resumeAfter") or None
        if budget <= 0:
            # The queue is full of this source's CrawlJobs: continue once some finish.
            result.capped, result.resume_after = True, start_after
            return result
        bound = sweep.lower_bound(source, parse_time(current.get("watermark")))
        existing = _Names(self.state.crawljobs, source.namespace)
        try:
            versioned = await self.lister.versioned(source.bucket)
            async for page in self.lister.pages(source.bucket, source.prefix, start_after, versioned):
                for listed in page:
                    result.listed += 1
                    matched, needed = sweep.wanted(source, listed, bound, existing)
                    result.matched += matched
                    if needed:
                        await self.create(source, listed, result)
                        if len(result.created) >= budget:
                            result.capped, result.resume_after = True, listed.key
                            break
                if result.capped:
                    break
            else:
                result.complete = True
        except ListingError as exc:
            result.error_code, result.error_message = exc.code, exc.message
        except kube.Unavailable as exc:
            result.error_code, result.error_message = "Unavailable", f"Kubernetes API: {exc}"
        result.duration_seconds = time.monotonic() - clock
        return result

    async def create(self, source: sources.Source, listed: sweep.Listed, result: sweep.PassResult) -> None:
        """Create the object's CrawlJob; a 409 is an existing one (or a collision); 422 is skipped."""
        ref = listed.ref(source.bucket)
        manifest = sources.apply_source(resource.crawljob_manifest(ref, source.namespace), source)
        name = str(manifest["metadata"]["name"])
        client = self.state.client
        try:
            created = await client.create(kube.CRAWLJOBS, source.namespace, manifest)
        except kube.Conflict:
            found = await client.get(kube.CRAWLJOBS, source.namespace, name)
            self.state.remember_crawljob(found)
            other = (found.get("spec") or {}).get("source") or {}
            if (other.get("bucket"), other.get("key")) != (ref.bucket, ref.key):
                result.collisions.append(name)
            result.existing += 1
            return
        except kube.Invalid as exc:
            log.warning("sweep %s: CrawlJob %s refused: %s", source.name, name, exc)
            result.refused.append(name)
            return
        self.state.remember_crawljob(created)
        result.created.append(name)

    async def write_status(self, body: Body, patch: dict[str, Any]) -> None:
        current = body.get("status") or {}
        if not sweep.needs_status(current, patch):
            return
        namespace, name = key_of(body)
        try:
            updated = await self.state.client.patch(
                kube.CRAWLSOURCES, namespace, name, {"status": patch}, "status"
            )
        except kube.NotFound:
            self.state.sources.pop((namespace, name), None)
            return
        except kube.KubeError as exc:
            log.warning("cannot write the status of CrawlSource %s (will retry): %s", name, exc)
            self.held_until[(namespace, name)] = utc_now() + datetime.timedelta(seconds=sweep.RETRY_SECONDS)
            return
        self.held_until.pop((namespace, name), None)
        if updated.get("metadata"):
            remember_source(self.state, updated)

    async def post_event(self, body: Body, reason: str, message: str, warning: bool) -> None:
        """A Kubernetes Event on the CrawlSource (best effort)."""
        meta = Meta.parse(body)
        namespace = meta.namespace
        event = events.build_event(
            meta, reason, message, warning, self.state.instance, utc_now(), kind=sources.KIND, action="Sweep"
        )
        try:
            await self.state.client.create(kube.EVENTS, namespace, event)
        except kube.KubeError as exc:
            log.warning("cannot post event %s on CrawlSource %s: %s", reason, meta.name, exc)


def remember_source(state: State, body: Mapping[str, Any]) -> None:
    """Keep the newest version of a CrawlSource body (watch events may trail a write's answer)."""
    key = key_of(body)
    known = state.sources.get(key)
    new, old = _version(body), _version(known or {})
    if known is not None and new is not None and old is not None and new < old:
        return
    state.sources[key] = dict(body)


def _version(body: Mapping[str, Any]) -> int | None:
    try:
        return int(str((body.get("metadata") or {}).get("resourceVersion")))
    except ValueError:
        return None
