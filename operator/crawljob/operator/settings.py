"""Settings of the operator (`crawljob operator`): built once from flags and CRAWLJOB_* env vars."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from crawljob.flags import add_kube_flags, env_default, split_list
from crawljob.operator import peering, sweep


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator needs, validated. Names follow docs/contracts.md."""

    namespace: str | None = None
    kube_server: str | None = None
    kubeconfig: str | None = None
    worker_image: str = "crawljob-worker:latest"
    worker_command: tuple[str, ...] = ("crawljob-worker",)
    worker_service_account: str | None = None
    worker_resources: Mapping[str, object] | None = None
    worker_env: tuple[Mapping[str, object], ...] = ()
    worker_security_context: Mapping[str, object] | None = None
    # What a CrawlJob's jobTemplate may override (overrides.py): images beyond worker_image,
    # and whether serviceAccountName and env may be set at all. Off by default: whoever may create
    # CrawlJobs must not thereby run any image as any service account of the namespace.
    allowed_images: tuple[str, ...] = ()
    allow_service_account_override: bool = False
    allow_env_override: bool = False
    default_output_uri: str | None = None
    max_active: int = 8
    backoff_limit: int = 3
    # Sharded crawls: the cap on a CrawlJob's shards, and how many of one CrawlJob's pods (Indexed Job)
    # or shard Jobs (servers without Indexed Jobs) run at once.
    max_shards: int = 64
    shard_parallelism: int = 8
    active_deadline_seconds: int | None = None
    finished_ttl_seconds: int | None = None
    successful_history_limit: int | None = None
    failed_history_limit: int | None = None
    job_ttl_seconds: int | None = 86400
    health_port: int = 8081
    health_host: str = "0.0.0.0"
    log_format: str = "json"
    # Periodic full reconcile (also runs GC): catches anything a missed watch event left behind.
    resync_seconds: float = 30.0
    # Watch streams are re-established this often even when silent (kopf#698).
    watch_server_timeout: int = 300
    # A watch stream that delivers nothing (not even a bookmark) this long is reopened: a frozen
    # connection (a stuck load balancer) is noticed within this period. kopf >= 1.45 honours it.
    watch_inactivity_seconds: float = 70.0
    # /healthz fails after this long without progress (resync or peering read): well past a
    # control-plane outage the operator rides out by itself. See docs/operator.md, "Faults".
    liveness_seconds: float = 300.0
    # Active/standby (kopf peering): None runs standalone (one replica, Recreate). See peering.py.
    peering: str | None = None
    priority: int = 0
    peering_identity: str = ""
    peering_lifetime: int = 30
    # CrawlSource sweeps (docs/sources.md): the watermark trails the last complete sweep's start by
    # this much (late-listed objects, clock skew); at most this many CrawlJobs per pass and source.
    sweep_lookback_seconds: float = 3600.0
    sweep_max_create: int = 500
    # SQS long polls (spec.sqs.queueUrl) wait at most this long for messages (SQS allows 0-20).
    sqs_wait_seconds: int = 20
    # Completion signal: a CloudEvent per terminal phase to each sink (and each CrawlJob's own).
    notify_sinks: tuple[str, ...] = ()
    # First retry delay of an undelivered CloudEvent (doubles each time, at most 5 minutes).
    notify_retry_seconds: float = 1.0


def _json_arg(name: str, value: str | None, kind: type) -> object:
    import json

    if value in (None, ""):
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"--{name} is not valid JSON: {exc}") from exc
    if not isinstance(parsed, kind):
        raise ValueError(f"--{name} must be a JSON {kind.__name__}, got {type(parsed).__name__}")
    return parsed


def _optional_int(name: str, value: str | None, minimum: int = 0) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise ValueError(f"--{name} must be an integer, got {value!r}") from exc
    if number < minimum:
        raise ValueError(f"--{name} must be at least {minimum}, got {number}")
    return number


def _positive_float(name: str, value: object) -> float:
    try:
        number = float(str(value))
    except ValueError as exc:
        raise ValueError(f"--{name} must be a number, got {value!r}") from exc
    if not number > 0:
        raise ValueError(f"--{name} must be positive, got {value!r}")
    return number


def operator_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The flags of `crawljob operator`, defaulting from CRAWLJOB_* env vars."""
    defaults = OperatorSettings()
    parser = argparse.ArgumentParser(
        prog="crawljob operator",
        description="Reconcile CrawlJobs into batch/v1 Jobs running the worker, under a concurrency cap, "
        "and report their progress, result and failures. Every flag also reads CRAWLJOB_<FLAG>.",
    )

    def env(name: str, default: object = None) -> str | None:
        return env_default(environ, name, None if default is None else str(default))

    worker = parser.add_argument_group("worker Jobs")
    worker.add_argument(
        "--worker-image",
        default=env("WORKER_IMAGE", defaults.worker_image),
        help="worker image (CRAWLJOB_WORKER_IMAGE)",
    )
    worker.add_argument(
        "--allowed-images",
        default=env("ALLOWED_IMAGES"),
        help="comma list of images a CrawlJob's jobTemplate.image may name besides --worker-image; "
        "an entry ending in * allows that prefix (CRAWLJOB_ALLOWED_IMAGES; empty: only --worker-image)",
    )
    worker.add_argument(
        "--allow-service-account-override",
        default=env("ALLOW_SERVICE_ACCOUNT_OVERRIDE", "false"),
        help="true: a CrawlJob may set jobTemplate.serviceAccountName (CRAWLJOB_ALLOW_SERVICE_ACCOUNT_OVERRIDE)",
    )
    worker.add_argument(
        "--allow-env-override",
        default=env("ALLOW_ENV_OVERRIDE", "false"),
        help="true: a CrawlJob may set jobTemplate.env (CRAWLJOB_ALLOW_ENV_OVERRIDE)",
    )
    worker.add_argument(
        "--worker-command",
        default=env("WORKER_COMMAND", '["crawljob-worker"]'),
        help="container command as a JSON list (CRAWLJOB_WORKER_COMMAND)",
    )
    worker.add_argument(
        "--worker-service-account",
        default=env("WORKER_SERVICE_ACCOUNT"),
        help="service account of worker pods (CRAWLJOB_WORKER_SERVICE_ACCOUNT)",
    )
    worker.add_argument(
        "--worker-resources",
        default=env("WORKER_RESOURCES"),
        help='container resources as JSON, e.g. {"requests": {"memory": "512Mi"}} '
        "(CRAWLJOB_WORKER_RESOURCES)",
    )
    worker.add_argument(
        "--worker-env",
        default=env("WORKER_ENV"),
        help="JSON list of EnvVar objects added to every worker (CRAWLJOB_WORKER_ENV)",
    )
    worker.add_argument(
        "--worker-security-context",
        default=env("WORKER_SECURITY_CONTEXT"),
        help="pod securityContext as JSON (CRAWLJOB_WORKER_SECURITY_CONTEXT)",
    )
    worker.add_argument(
        "--default-output-uri",
        default=env("DEFAULT_OUTPUT_URI"),
        help="outputs go under <uri>/<crawljob name>/; default "
        "s3://<source bucket>/crawljob-output/<name>/ (CRAWLJOB_DEFAULT_OUTPUT_URI)",
    )
    worker.add_argument(
        "--backoff-limit",
        default=env("BACKOFF_LIMIT", defaults.backoff_limit),
        help="retries of retryable worker failures (CRAWLJOB_BACKOFF_LIMIT)",
    )
    worker.add_argument(
        "--active-deadline-seconds",
        default=env("ACTIVE_DEADLINE_SECONDS"),
        help="default wall-clock limit of a crawl, of a sharded one's whole run (CRAWLJOB_ACTIVE_DEADLINE_SECONDS)",
    )
    worker.add_argument(
        "--job-ttl-seconds",
        default=env("JOB_TTL_SECONDS", defaults.job_ttl_seconds),
        help="ttlSecondsAfterFinished of Jobs (CRAWLJOB_JOB_TTL_SECONDS)",
    )
    worker.add_argument(
        "--max-shards",
        default=env("MAX_SHARDS", defaults.max_shards),
        help="cap on the shards of one CrawlJob, from spec.shards or spec.shardSizeMb (CRAWLJOB_MAX_SHARDS)",
    )
    worker.add_argument(
        "--shard-parallelism",
        default=env("SHARD_PARALLELISM", defaults.shard_parallelism),
        help="pods of one sharded CrawlJob running at once: the Indexed Job's parallelism, or on servers "
        "without Indexed Jobs the most unfinished shard Jobs at once (CRAWLJOB_SHARD_PARALLELISM)",
    )
    notify = parser.add_argument_group("completion signal (CloudEvents over HTTP)")
    notify.add_argument(
        "--notify-sinks",
        default=env("NOTIFY_SINKS"),
        help="comma list of http(s) URLs that get a CloudEvent when a CrawlJob succeeds or fails "
        "(CRAWLJOB_NOTIFY_SINKS; a CrawlJob's spec.notify.sinks adds its own)",
    )
    notify.add_argument(
        "--notify-retry-seconds",
        default=env("NOTIFY_RETRY_SECONDS", defaults.notify_retry_seconds),
        help="first retry delay of an undelivered event; doubles up to 5 minutes (CRAWLJOB_NOTIFY_RETRY_SECONDS)",
    )
    queue = parser.add_argument_group("queue and garbage collection")
    queue.add_argument(
        "--max-active",
        default=env("MAX_ACTIVE", defaults.max_active),
        help="at most this many Jobs run at once; others wait Queued (CRAWLJOB_MAX_ACTIVE)",
    )
    queue.add_argument(
        "--finished-ttl-seconds",
        default=env("FINISHED_TTL_SECONDS"),
        help="delete finished CrawlJobs this long after completion (CRAWLJOB_FINISHED_TTL_SECONDS)",
    )
    queue.add_argument(
        "--successful-history-limit",
        default=env("SUCCESSFUL_HISTORY_LIMIT"),
        help="keep at most this many Succeeded CrawlJobs (CRAWLJOB_SUCCESSFUL_HISTORY_LIMIT)",
    )
    queue.add_argument(
        "--failed-history-limit",
        default=env("FAILED_HISTORY_LIMIT"),
        help="keep at most this many Failed CrawlJobs (CRAWLJOB_FAILED_HISTORY_LIMIT)",
    )
    queue.add_argument(
        "--resync-seconds",
        default=env("RESYNC_SECONDS", defaults.resync_seconds),
        help="full reconcile + GC period (CRAWLJOB_RESYNC_SECONDS)",
    )
    sweeps = parser.add_argument_group("CrawlSource sweeps")
    sweeps.add_argument(
        "--sweep-lookback-seconds",
        default=env("SWEEP_LOOKBACK_SECONDS", int(defaults.sweep_lookback_seconds)),
        help="a complete sweep moves the source's watermark to its start minus this; objects older "
        "than the watermark are never swept again; must be shorter than --finished-ttl-seconds "
        "(CRAWLJOB_SWEEP_LOOKBACK_SECONDS)",
    )
    sweeps.add_argument(
        "--sweep-max-create",
        default=env("SWEEP_MAX_CREATE", defaults.sweep_max_create),
        help="a sweep pass creates at most this many CrawlJobs, less the source's unfinished ones; "
        "a backfill continues on the next pass (CRAWLJOB_SWEEP_MAX_CREATE)",
    )
    sweeps.add_argument(
        "--sqs-wait-seconds",
        default=env("SQS_WAIT_SECONDS", defaults.sqs_wait_seconds),
        help="an SQS long poll of a CrawlSource's queue waits at most this long, 0 to 20 "
        "(CRAWLJOB_SQS_WAIT_SECONDS)",
    )
    ops = parser.add_argument_group("operations")
    ops.add_argument(
        "--health-port",
        default=env("HEALTH_PORT", defaults.health_port),
        help="port of /healthz, /readyz and /metrics (CRAWLJOB_HEALTH_PORT; 0 disables)",
    )
    ops.add_argument(
        "--liveness-seconds",
        default=env("LIVENESS_SECONDS", defaults.liveness_seconds),
        help="/healthz answers 503 after this long without reaching the API (a resync, or a read of "
        "the peering object on a standby); keep it well past the control-plane outages the operator "
        "should ride out (CRAWLJOB_LIVENESS_SECONDS)",
    )
    ops.add_argument(
        "--watch-inactivity-seconds",
        default=env("WATCH_INACTIVITY_SECONDS", defaults.watch_inactivity_seconds),
        help="reopen a watch stream that delivered nothing (not even a bookmark) for this long: a "
        "frozen connection is noticed within one period (CRAWLJOB_WATCH_INACTIVITY_SECONDS)",
    )
    ops.add_argument(
        "--peering",
        default=env("PEERING"),
        help="name of the KopfPeering object shared by active/standby replicas; unset: standalone, "
        "one replica (CRAWLJOB_PEERING)",
    )
    ops.add_argument(
        "--priority",
        default=env("PRIORITY", defaults.priority),
        help="peering priority: the live replica with the highest acts, the others stand by; an "
        "integer, or 'ordinal' for minus the trailing number of the identity, e.g. a StatefulSet "
        "pod name (CRAWLJOB_PRIORITY)",
    )
    ops.add_argument(
        "--peering-identity",
        default=env("PEERING_IDENTITY"),
        help="this replica's name in the peering object; default <hostname>/<pid> "
        "(CRAWLJOB_PEERING_IDENTITY)",
    )
    ops.add_argument(
        "--peering-lifetime",
        default=env("PEERING_LIFETIME", defaults.peering_lifetime),
        help="seconds a replica counts as alive after its last keep-alive: the failover time after "
        "a crash (CRAWLJOB_PEERING_LIFETIME)",
    )
    ops.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=env("LOG_FORMAT", "json"),
        help="log lines as JSON or text (CRAWLJOB_LOG_FORMAT)",
    )
    add_kube_flags(parser, environ)
    return parser


def _boolean(name: str, value: object) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"--{name} must be true or false, got {value!r}")


def operator_settings(args: argparse.Namespace) -> OperatorSettings:
    """Validated settings from parsed flags; ValueError with a readable message when inconsistent."""
    command = _json_arg("worker-command", args.worker_command, list)
    if not command or not all(isinstance(part, str) and part for part in command):  # type: ignore[attr-defined]
        raise ValueError("--worker-command must be a non-empty JSON list of strings")
    worker_env = _json_arg("worker-env", args.worker_env, list) or []
    for item in worker_env:  # type: ignore[attr-defined]
        if not isinstance(item, dict) or not item.get("name"):
            raise ValueError(f"--worker-env items must be EnvVar objects with a name, got {item!r}")
    max_active = _optional_int("max-active", str(args.max_active), minimum=1)
    backoff = _optional_int("backoff-limit", str(args.backoff_limit), minimum=0)
    health_port = _optional_int("health-port", str(args.health_port), minimum=0)
    try:
        resync = float(args.resync_seconds)
    except ValueError as exc:
        raise ValueError(f"--resync-seconds must be a number, got {args.resync_seconds!r}") from exc
    if resync <= 0:
        raise ValueError("--resync-seconds must be positive")
    liveness = _positive_float("liveness-seconds", args.liveness_seconds)
    if liveness <= resync:
        raise ValueError(
            f"--liveness-seconds ({liveness:g}) must be longer than --resync-seconds ({resync:g})"
        )
    inactivity = _positive_float("watch-inactivity-seconds", args.watch_inactivity_seconds)
    identity = args.peering_identity or peering.default_identity()
    priority = peering.parse_priority(str(args.priority), identity)
    lifetime = _optional_int("peering-lifetime", str(args.peering_lifetime), minimum=1)
    try:
        lookback = float(args.sweep_lookback_seconds)
    except ValueError as exc:
        raise ValueError(
            f"--sweep-lookback-seconds must be a number, got {args.sweep_lookback_seconds!r}"
        ) from exc
    finished_ttl = _optional_int("finished-ttl-seconds", args.finished_ttl_seconds)
    sweep.check_lookback(lookback, finished_ttl)
    max_create = _optional_int("sweep-max-create", str(args.sweep_max_create), minimum=1)
    sqs_wait = _optional_int("sqs-wait-seconds", str(args.sqs_wait_seconds), minimum=0)
    if sqs_wait is not None and sqs_wait > 20:
        raise ValueError(f"--sqs-wait-seconds must be from 0 to 20 (SQS's limit), got {sqs_wait}")
    uri = args.default_output_uri
    if uri and not (uri.startswith("s3://") or uri.startswith("file://")):
        raise ValueError(f"--default-output-uri must be s3://bucket/prefix or file://path, got {uri!r}")
    sinks = split_list(args.notify_sinks)
    for sink in sinks:
        if not sink.startswith(("http://", "https://")):
            raise ValueError(f"--notify-sinks takes http(s) URLs, got {sink!r}")
    try:
        notify_retry = float(args.notify_retry_seconds)
    except ValueError as exc:
        raise ValueError(
            f"--notify-retry-seconds must be a number, got {args.notify_retry_seconds!r}"
        ) from exc
    if notify_retry <= 0:
        raise ValueError("--notify-retry-seconds must be positive")
    return OperatorSettings(
        allowed_images=split_list(args.allowed_images),
        allow_service_account_override=_boolean(
            "allow-service-account-override", args.allow_service_account_override
        ),
        allow_env_override=_boolean("allow-env-override", args.allow_env_override),
        notify_sinks=sinks,
        notify_retry_seconds=notify_retry,
        namespace=args.namespace or None,
        kube_server=args.kube_server,
        kubeconfig=args.kubeconfig,
        worker_image=args.worker_image,
        worker_command=tuple(command),  # type: ignore[arg-type]
        worker_service_account=args.worker_service_account or None,
        worker_resources=_json_arg("worker-resources", args.worker_resources, dict),  # type: ignore[arg-type]
        worker_env=tuple(worker_env),  # type: ignore[arg-type]
        worker_security_context=_json_arg(  # type: ignore[arg-type]
            "worker-security-context", args.worker_security_context, dict
        ),
        default_output_uri=uri or None,
        max_active=max_active or 1,
        backoff_limit=backoff or 0,
        max_shards=_optional_int("max-shards", str(args.max_shards), minimum=1) or 1,
        shard_parallelism=_optional_int("shard-parallelism", str(args.shard_parallelism), minimum=1) or 1,
        active_deadline_seconds=_optional_int("active-deadline-seconds", args.active_deadline_seconds, 1),
        finished_ttl_seconds=finished_ttl,
        successful_history_limit=_optional_int("successful-history-limit", args.successful_history_limit),
        failed_history_limit=_optional_int("failed-history-limit", args.failed_history_limit),
        job_ttl_seconds=_optional_int("job-ttl-seconds", args.job_ttl_seconds),
        health_port=health_port or 0,
        log_format=args.log_format,
        resync_seconds=resync,
        liveness_seconds=liveness,
        watch_inactivity_seconds=inactivity,
        peering=args.peering or None,
        priority=priority,
        peering_identity=identity,
        peering_lifetime=lifetime or OperatorSettings.peering_lifetime,
        sweep_lookback_seconds=lookback,
        sweep_max_create=max_create or OperatorSettings.sweep_max_create,
        sqs_wait_seconds=OperatorSettings.sqs_wait_seconds if sqs_wait is None else sqs_wait,
    )
