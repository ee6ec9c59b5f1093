"""The receiver: an aiohttp app turning S3 event webhooks into CrawlJobs (`crawljob receiver`).

Handlers are thin: `auth` checks the caller, `events` parses the body, `sns` checks SNS
deliveries, `resource` names the CrawlJob and `kube` creates it. A create answering 409 is a
duplicate (the same event delivered again); an unreachable API answers 503 with Retry-After so
the sender retries; nothing is acknowledged before the API has stored it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import importlib.resources
import logging
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from crawljob import events, flags, kube, resource
from crawljob.logs import configure_logging
from crawljob.receiver import auth, routing, sns, versions
from crawljob.receiver.metrics import ReceiverMetrics
from crawljob.receiver.readiness import check_writable
from crawljob.receiver.settings import ReceiverSettings, receiver_parser, receiver_settings
from crawljob.resource import crawljob_manifest

log = logging.getLogger("crawljob.receiver")

TRIGGER_PATH = "/v1/trigger"
SNS_TYPE_HEADER = "x-amz-sns-message-type"
SNS_RAW_HEADER = "x-amz-sns-rawdelivery"
SNS_TOPIC_HEADER = "x-amz-sns-topic-arn"
TOPICS_SETTING = "receiver.sns.topicArns (CRAWLJOB_SNS_TOPIC_ARNS)"
SNS_UNAVAILABLE = "SNS could not be reached to check this message; retry later"


@dataclass
class Outcome:
    """What became of one object of a request."""

    target: events.Target
    name: str
    status: str  # created | duplicate | failed | refused
    error: str | None = None
    note: str | None = None  # how a minimal-shape object was named (versions.resolve)

    def as_dict(self, namespace: str) -> dict[str, str]:
        answer = {
            "name": self.name,
            "namespace": namespace,
            "bucket": self.target.ref.bucket,
            "key": self.target.ref.key,
            "status": self.status,
        }
        if self.error:
            answer["error"] = self.error
        if self.note:
            answer["note"] = self.note
        return answer


@dataclass
class Readiness:
    """The last /readyz probe of the API, reused for a short while so probes don't load it."""

    ok: bool = False
    message: str = "not checked yet"
    checked_at: float = float("-inf")
    created_at: float = float("-inf")  # the last CrawlJob actually created (proves writes work)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class ReceiverState:
    """Everything the handlers share, built once from the settings."""

    settings: ReceiverSettings
    namespace: str
    auth: auth.AuthSettings
    filters: events.Filters
    openapi: bytes
    readiness: Readiness = field(default_factory=Readiness)


STATE = web.AppKey("state", ReceiverState)
KUBE = web.AppKey("kube", kube.KubeClient)
S3 = web.AppKey("s3", object)  # a botocore S3 client with --resolve-versions, else None
CERTIFICATES = web.AppKey("certificates", sns.CertificateCache)
METRICS = web.AppKey("metrics", ReceiverMetrics)
SOURCES = web.AppKey("sources", routing.SourceIndex)
REQUEST_LOG = web.RequestKey("crawljob_log", dict[str, Any])


class ServiceUnavailable(Exception):
    """Something on our side (the API, SNS) cannot be reached: answer 503 + Retry-After."""

    def __init__(self, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body or {}


def filters_of(settings: ReceiverSettings) -> events.Filters:
    """The object filters, with the loop guard on the crawl output locations."""
    locations: list[tuple[str | None, str]] = [(None, resource.DEFAULT_OUTPUT_PREFIX)]
    if settings.default_output_uri:
        locations.append(events.output_location(settings.default_output_uri))
    return events.Filters(
        buckets=settings.allowed_buckets,
        prefixes=settings.key_prefixes,
        suffixes=settings.key_suffixes,
        output_locations=tuple(locations),
    )


def openapi_document() -> bytes:
    """The OpenAPI document of the receiver, shipped as package data."""
    return importlib.resources.files("crawljob.receiver").joinpath("openapi.json").read_bytes()


def create_app(
    settings: ReceiverSettings,
    *,
    connection: kube.Connection | None = None,
    metrics: ReceiverMetrics | None = None,
) -> web.Application:
    """The receiver app; the API client (and the SNS HTTP session) live in its cleanup context."""
    if connection is None:
        if not settings.kube_server:
            raise ValueError("create_app needs a connection or settings.kube_server")
        connection = kube.Connection(server=settings.kube_server.rstrip("/"))
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_request_middleware])
    app[STATE] = ReceiverState(
        settings=settings,
        namespace=settings.namespace or connection.default_namespace,
        auth=auth.AuthSettings(settings.auth_mode, settings.auth_token, settings.hmac_key),
        filters=filters_of(settings),
        openapi=openapi_document(),
    )
    app[METRICS] = metrics or ReceiverMetrics()
    app.cleanup_ctx.append(_clients(connection))
    app.router.add_post(TRIGGER_PATH, trigger)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if settings.metrics_port:
        app.cleanup_ctx.append(_metrics_server(settings.host, settings.metrics_port))
    else:
        app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", openapi)
    return app


def create_metrics_app(metrics: ReceiverMetrics) -> web.Application:
    """The app of the metrics port: /metrics and nothing else."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def _metrics_server(host: str, port: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """Serve the receiver's metrics on *port* for as long as the receiver app runs."""

    async def serve(app: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(create_metrics_app(app[METRICS]), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("metrics listening", extra={"fields": {"host": host, "port": port}})
            yield
        finally:
            await runner.cleanup()

    return serve


def _clients(connection: kube.Connection) -> Callable[[web.Application], AsyncIterator[None]]:
    async def clients(app: web.Application) -> AsyncIterator[None]:
        settings = app[STATE].settings
        ssl_context: ssl.SSLContext | None = None
        if settings.sns_ca_file:
            ssl_context = ssl.create_default_context(cafile=settings.sns_ca_file)
        async with (
            kube.KubeClient(connection, timeout=settings.kube_timeout) as client,
            aiohttp.ClientSession() as session,
        ):
            app[KUBE] = client
            app[S3] = versions.make_client() if settings.resolve_versions else None
            app[CERTIFICATES] = sns.CertificateCache(
                session,
                host_pattern=settings.sns_cert_host_pattern,
                subject_pattern=settings.sns_cert_subject_pattern,
                ssl_context=ssl_context,
            )
            index = routing.SourceIndex(client, app[STATE].namespace)
            await index.start()
            app[SOURCES] = index
            try:
                yield
            finally:
                await index.stop()

    return clients


# ---- handlers ----


async def trigger(request: web.Request) -> web.Response:
    """POST /v1/trigger: one webhook delivery → CrawlJobs (202), or why not."""
    app = request.app
    state = app[STATE]
    record: dict[str, Any] = request[REQUEST_LOG]
    body = await _read_body(request, state.settings.max_body_bytes)
    headers = request.headers
    sns_type = headers.get(SNS_TYPE_HEADER)
    raw_delivery = headers.get(SNS_RAW_HEADER, "").lower() == "true"
    signed_sns = sns_type is not None and not raw_delivery
    # Every request carries the configured credentials, SNS too (SNS sends the user:token of
    # its subscription URL after a 401 with a Basic challenge); SNS is then also checked by its
    # signature, topic and age.
    auth.check(state.auth, headers, body)
    document = events.load_json(body)
    parsed = events.parse_document(document, state.settings.default_bucket, state.settings.max_records)
    if isinstance(parsed, events.SnsEnvelope):
        record["format"] = "sns"
        handled = await _handle_sns(app, parsed, record)
        if isinstance(handled, web.Response):
            return handled
        parsed = handled
    elif signed_sns:
        raise sns.SnsRejected(f"{SNS_TYPE_HEADER} is set but the body is not a signed SNS message")
    elif raw_delivery:
        _check_topic(app, headers.get(SNS_TOPIC_HEADER, ""), "Notification")
        parsed = dataclasses.replace(parsed, format="sns-raw")
    record["format"] = parsed.format
    parsed = events.apply_filters(parsed, state.filters)
    notes: dict[int, str] = {}
    if parsed.format == "minimal":
        parsed, notes = await _resolve_versions(app, parsed)
    outcomes = await _create_all(app, parsed.targets)
    for index, note in notes.items():
        outcomes[index].note = note
    return _answer(app, parsed, outcomes, record)


async def _resolve_versions(
    app: web.Application, parsed: events.Parsed
) -> tuple[events.Parsed, dict[int, str]]:
    """The minimal shape's object with its current version (HEAD), or a note that it is named by key."""
    try:
        resolved = await versions.resolve(app[S3], parsed.targets)
    except versions.ObjectMissing as exc:
        raise events.EventError(f"{exc}: nothing to crawl", "object.key") from exc
    except versions.S3Unavailable as exc:
        raise ServiceUnavailable(f"{exc}; retry later") from exc
    return dataclasses.replace(parsed, targets=resolved.targets), resolved.notes


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    return await request.read()


async def _handle_sns(
    app: web.Application, envelope: events.SnsEnvelope, record: dict[str, Any]
) -> events.Parsed | web.Response:
    """Check an SNS envelope; confirm subscriptions; unwrap notifications."""
    state = app[STATE]
    metrics = app[METRICS]
    record["topic"] = envelope.topic_arn
    _check_topic(app, envelope.topic_arn, envelope.type)
    try:
        sns.check_timestamp(
            envelope.fields, datetime.datetime.now(tz=datetime.UTC), state.settings.sns_max_age_seconds
        )
        await app[CERTIFICATES].verify(envelope.fields)
    except sns.SnsUnavailable as exc:
        metrics.sns.labels(envelope.type, "unavailable").inc()
        log.warning("SNS message %s not checked: %s", envelope.fields.get("MessageId", "")[:100], exc)
        raise ServiceUnavailable(SNS_UNAVAILABLE) from exc
    except sns.SnsRejected:
        metrics.sns.labels(envelope.type, "refused").inc()
        raise
    if envelope.type == "SubscriptionConfirmation":
        try:
            await app[CERTIFICATES].confirm(envelope.fields)
        except sns.SnsUnavailable as exc:
            metrics.sns.labels(envelope.type, "unavailable").inc()
            log.warning("SNS subscription to %s not confirmed: %s", envelope.topic_arn[:200], exc)
            raise ServiceUnavailable(SNS_UNAVAILABLE) from exc
        metrics.sns.labels(envelope.type, "confirmed").inc()
        record["outcome"] = "confirmed"
        return web.json_response(
            {"format": "sns", "subscription": "confirmed", "topic": envelope.topic_arn}, status=200
        )
    if envelope.type == "UnsubscribeConfirmation":
        metrics.sns.labels(envelope.type, "accepted").inc()
        record["outcome"] = "ignored"
        return web.json_response(
            {
                "format": "sns",
                "crawljobs": [],
                "ignored": [{"reason": f"SNS UnsubscribeConfirmation for {envelope.topic_arn}"}],
            },
            status=202,
        )
    metrics.sns.labels(envelope.type, "accepted").inc()
    return events.parse_sns_message(envelope.message, state.settings.max_records)


def _check_topic(app: web.Application, topic_arn: str, message_type: str) -> None:
    """SNS is accepted only from the listed topics; with none listed, SNS is refused."""
    topics = app[STATE].settings.sns_topic_arns
    if topic_arn in topics:
        return
    app[METRICS].sns.labels(message_type[:40], "refused").inc()
    shown = topic_arn[:256]
    if not topics:
        raise sns.SnsRejected(
            f"SNS messages are refused: no topic is allowed; list {shown!r} in {TOPICS_SETTING}"
        )
    raise sns.SnsRejected(f"SNS topic {shown!r} is not in the allowed topics, {TOPICS_SETTING}")


async def _create_all(app: web.Application, targets: Sequence[events.Target]) -> list[Outcome]:
    """Create every target's CrawlJob, a bounded number at a time (one request cannot flood the API)."""
    if len(targets) == 1:
        return [await _create(app, targets[0])]
    gate = asyncio.Semaphore(app[STATE].settings.create_concurrency)

    async def gated(target: events.Target) -> Outcome:
        async with gate:
            return await _create(app, target)

    return list(await asyncio.gather(*(gated(target) for target in targets)))


# A name held by another object moves the CrawlJob to the next alternative name, this many times.
MAX_NAME_ATTEMPTS = 4


async def _create(app: web.Application, target: events.Target) -> Outcome:
    """Create one CrawlJob: created, duplicate (409 for the same object), refused or failed.

    A 409 is read back: the same object version is a duplicate; a different one is a name
    collision, counted, and the CrawlJob takes the next alternative name.
    """
    name = ""
    for attempt in range(MAX_NAME_ATTEMPTS):
        outcome = await _create_named(app, target, attempt)
        if outcome is not None:
            return outcome
        name = resource.crawljob_name(target.ref, attempt)
        app[METRICS].collisions.inc()
        log.warning("CrawlJob name %s is held by another object; trying the next name", name)
    return Outcome(
        target, name, "refused", f"CrawlJob names of this object are held by {MAX_NAME_ATTEMPTS} others"
    )


async def _create_named(app: web.Application, target: events.Target, attempt: int) -> Outcome | None:
    """One create under the *attempt*-th name; None when that name belongs to another object."""
    state = app[STATE]
    # An object of a CrawlSource gets the source's template and label (routing.py).
    manifest = app[SOURCES].route(
        crawljob_manifest(target.ref, state.namespace, raw_key=target.raw_key, attempt=attempt),
        target.ref.bucket,
        target.ref.key,
    )
    name = str(manifest["metadata"]["name"])
    try:
        await app[KUBE].create(kube.CRAWLJOBS, state.namespace, manifest)
    except kube.Conflict:
        return await _conflict(app, target, name)
    except kube.Invalid as exc:
        app[METRICS].api_errors.labels("invalid").inc()
        return Outcome(target, name, "refused", exc.message)
    except kube.Unavailable as exc:
        app[METRICS].api_errors.labels("unavailable").inc()
        log.warning("cannot create CrawlJob %s: %s", name, exc)
        return Outcome(target, name, "failed", "the Kubernetes API is unavailable")
    except kube.KubeError as exc:
        # 401/403/404 from the API: our credentials, RBAC or CRD are wrong, not the event.
        app[METRICS].api_errors.labels("other").inc()
        log.error("the Kubernetes API refused to create CrawlJob %s: %s", name, exc)
        return Outcome(target, name, "failed", f"the Kubernetes API answered {exc.status}")
    state.readiness.created_at = asyncio.get_running_loop().time()
    return Outcome(target, name, "created")


async def _conflict(app: web.Application, target: events.Target, name: str) -> Outcome | None:
    """After a 409: duplicate if *name* holds this object, None if another, failed if unreadable."""
    state = app[STATE]
    try:
        existing = await app[KUBE].get(kube.CRAWLJOBS, state.namespace, name)
    except kube.NotFound:
        # Deleted since the 409: the delivery is retried by the sender and then created.
        return Outcome(target, name, "failed", "the CrawlJob was deleted while this event was stored")
    except kube.KubeError as exc:
        app[METRICS].api_errors.labels("unavailable" if isinstance(exc, kube.Unavailable) else "other").inc()
        log.warning("cannot read CrawlJob %s after a conflict: %s", name, exc)
        return Outcome(target, name, "failed", "the Kubernetes API is unavailable")
    if resource.same_object((existing.get("spec") or {}).get("source"), target.ref):
        return Outcome(target, name, "duplicate")
    return None


def _answer(
    app: web.Application, parsed: events.Parsed, outcomes: list[Outcome], record: dict[str, Any]
) -> web.Response:
    state = app[STATE]
    metrics = app[METRICS]
    for outcome in outcomes:
        metrics.events.labels(parsed.format, outcome.status).inc()
    if parsed.ignored:
        metrics.events.labels(parsed.format, "ignored").inc(len(parsed.ignored))
    record["objects"] = [
        {"bucket": o.target.ref.bucket, "key": o.target.ref.key, "crawljob": o.name, "outcome": o.status}
        for o in outcomes
    ] + [{"bucket": i.bucket, "key": i.key, "outcome": "ignored", "reason": i.reason} for i in parsed.ignored]
    body: dict[str, Any] = {
        "format": parsed.format,
        "crawljobs": [o.as_dict(state.namespace) for o in outcomes],
        "ignored": [i.as_dict() for i in parsed.ignored],
    }
    statuses = {o.status for o in outcomes}
    if "failed" in statuses:
        record["outcome"] = "failed"
        body["error"] = (
            "could not store every CrawlJob; retry the whole delivery (stored ones are duplicates)"
        )
        retry = str(state.settings.retry_after_seconds)
        return web.json_response(body, status=503, headers={"Retry-After": retry})
    if "refused" in statuses:
        record["outcome"] = "refused"
        body["error"] = "the Kubernetes API refused a CrawlJob for this event"
        return web.json_response(body, status=400)
    record["outcome"] = ",".join(sorted(statuses)) if statuses else "ignored"
    return web.json_response(body, status=202)


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process serves requests."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: CrawlJobs can be stored (see readiness.py; the answer is reused for a short while)."""
    state = request.app[STATE]
    readiness = state.readiness
    loop = asyncio.get_running_loop()
    async with readiness.lock:
        fresh = state.settings.ready_cache_seconds
        if loop.time() - readiness.created_at < fresh:
            readiness.ok, readiness.message = True, "a CrawlJob was created just now"
            readiness.checked_at = loop.time()
        elif loop.time() - readiness.checked_at >= fresh:
            try:
                readiness.message = await check_writable(
                    request.app[KUBE], state.namespace, timeout=min(state.settings.kube_timeout, 3.0)
                )
                readiness.ok = True
            except kube.KubeError as exc:
                readiness.ok, readiness.message = False, str(exc)
            readiness.checked_at = loop.time()
    if readiness.ok:
        return web.json_response({"status": "ready", "message": readiness.message})
    return web.json_response(
        {"status": "unavailable", "message": readiness.message},
        status=503,
        headers={"Retry-After": str(state.settings.retry_after_seconds)},
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text exposition."""
    text, content_type = request.app[METRICS].render()
    response = web.Response(body=text)
    response.content_type = content_type.split(";")[0]
    response.charset = "utf-8"
    return response


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the document describing these endpoints."""
    return web.Response(body=request.app[STATE].openapi, content_type="application/json")


# ---- one middleware: errors as JSON, metrics, one log line per request ----

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    record: dict[str, Any] = {"method": request.method, "path": request.path}
    request[REQUEST_LOG] = record
    try:
        response = await handler(request)
    except events.EventError as exc:
        record["error"] = exc.message
        response = web.json_response(exc.as_dict(), status=exc.status)
    except auth.AuthError as exc:
        record["error"] = exc.message
        headers = {"WWW-Authenticate": _challenge(request)} if exc.status == 401 else None
        response = web.json_response({"error": exc.message}, status=exc.status, headers=headers)
    except sns.SnsRejected as exc:
        record["error"] = str(exc)
        response = web.json_response({"error": str(exc)}, status=403)
    except ServiceUnavailable as exc:
        record["error"] = exc.message
        retry = str(request.app[STATE].settings.retry_after_seconds)
        response = web.json_response(
            {"error": exc.message, **exc.body}, status=503, headers={"Retry-After": retry}
        )
    except web.HTTPException as exc:
        record["error"] = exc.reason
        response = web.json_response(
            {"error": _http_error_message(exc, request)}, status=exc.status, headers=_allowed_headers(exc)
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        record["error"] = repr(exc)
        response = web.json_response({"error": "internal error; the event was not stored"}, status=500)
    elapsed = time.perf_counter() - started
    endpoint = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
    metrics = request.app[METRICS]
    metrics.requests.labels(endpoint, str(response.status)).inc()
    metrics.latency.labels(endpoint).observe(elapsed)
    if endpoint == TRIGGER_PATH or response.status >= 400:
        record["status"] = response.status
        record["latency_ms"] = round(elapsed * 1000, 2)
        log.info("request", extra={"fields": record})
    return response


def _challenge(request: web.Request) -> str:
    """SNS sends its subscription URL's credentials only after a Basic challenge; others get Bearer."""
    if SNS_TYPE_HEADER in request.headers or SNS_RAW_HEADER in request.headers:
        return 'Basic realm="crawljob"'
    return 'Bearer realm="crawljob"'


def _http_error_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 413:
        limit = request.app[STATE].settings.max_body_bytes
        return f"request body larger than the limit of {limit} bytes"
    if exc.status == 405:
        return f"method {request.method} not allowed on {request.path}"
    if exc.status == 404:
        return f"no such endpoint {request.path}; events go to POST {TRIGGER_PATH}"
    return exc.reason


def _allowed_headers(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def main(argv: Sequence[str] | None = None) -> int:
    """`crawljob receiver`: parse flags/env, connect to the API, serve until interrupted."""
    environ = flags.environment()
    parser = receiver_parser(environ)
    args = flags.parse(parser, argv)
    try:
        settings = receiver_settings(args)
        connection = kube.discover_connection(settings.kube_server, settings.kubeconfig, environ)
    except (ValueError, OSError) as exc:
        print(f"crawljob receiver: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, quiet=("aiohttp.access",))
    if settings.auth_mode == "none":
        log.warning(
            "authentication is off (--auth-mode none): anyone who can reach this port can start "
            "crawls; use token or hmac outside a local setup"
        )
    app = create_app(settings, connection=connection)
    log.info(
        "receiver listening",
        extra={
            "fields": {
                "host": settings.host,
                "port": settings.port,
                "namespace": app[STATE].namespace,
                "kube_server": connection.server,
                "auth_mode": settings.auth_mode,
            }
        },
    )
    web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None, shutdown_timeout=10)
    return 0
