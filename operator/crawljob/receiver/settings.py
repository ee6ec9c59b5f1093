"""Settings of the receiver (`crawljob receiver`): built once from flags and CRAWLJOB_* env vars."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from crawljob.events import DEFAULT_MAX_RECORDS
from crawljob.flags import add_kube_flags, env_default, read_secret, split_list
from crawljob.receiver.sns import (
    DEFAULT_CERT_HOST_PATTERN,
    DEFAULT_CERT_SUBJECT_PATTERN,
    DEFAULT_MAX_AGE_SECONDS,
)


@dataclass(frozen=True)
class ReceiverSettings:
    """Everything the receiver needs, validated. Names follow docs/contracts.md."""

    host: str = "0.0.0.0"
    port: int = 8080
    # /metrics on a port of its own (0: on the webhook port), so what reaches the webhook (an
    # Ingress, a load balancer) never reaches the metrics; the chart sets 9090.
    metrics_port: int = 0
    namespace: str | None = None
    kube_server: str | None = None
    kubeconfig: str | None = None
    default_bucket: str | None = None
    auth_mode: str = "none"
    auth_token: str | None = None
    hmac_key: str | None = None
    allowed_buckets: tuple[str, ...] = ()
    key_prefixes: tuple[str, ...] = ()
    key_suffixes: tuple[str, ...] = ()
    sns_topic_arns: tuple[str, ...] = ()
    sns_cert_host_pattern: str = DEFAULT_CERT_HOST_PATTERN
    sns_cert_subject_pattern: str = DEFAULT_CERT_SUBJECT_PATTERN
    sns_ca_file: str | None = None
    sns_max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    max_body_bytes: int = 1048576
    # At most this many records per delivery (413 beyond), created at most this many at a time.
    max_records: int = DEFAULT_MAX_RECORDS
    create_concurrency: int = 8
    log_format: str = "json"
    default_output_uri: str | None = None
    # HEAD minimal-shape objects that name no version (needs S3 read access, standard AWS_* env).
    resolve_versions: bool = False
    # Below the 5 s EventBridge API destinations wait, so a slow API answers 503, not a timeout.
    kube_timeout: float = 4.0
    ready_cache_seconds: float = 2.0
    retry_after_seconds: int = 5


def receiver_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The flags of `crawljob receiver`, defaulting from CRAWLJOB_* env vars."""
    defaults = ReceiverSettings()
    parser = argparse.ArgumentParser(
        prog="crawljob receiver",
        description="Serve S3 event webhooks (S3/MinIO records, SNS, EventBridge, minimal JSON) on "
        "POST /v1/trigger and create one CrawlJob per new object. Every flag also reads CRAWLJOB_<FLAG>.",
    )

    def env(name: str, default: object = None) -> str | None:
        return env_default(environ, name, None if default is None else str(default))

    parser.add_argument("--host", default=env("HOST", defaults.host), help="listen address (CRAWLJOB_HOST)")
    parser.add_argument("--port", type=int, default=env("PORT", defaults.port), help="port (CRAWLJOB_PORT)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=env("METRICS_PORT", defaults.metrics_port),
        help="serve /metrics on this port only, not on the webhook port; 0 serves it on the webhook "
        "port (CRAWLJOB_METRICS_PORT)",
    )
    parser.add_argument(
        "--default-bucket",
        default=env("DEFAULT_BUCKET"),
        help="bucket for minimal events that name none (CRAWLJOB_DEFAULT_BUCKET)",
    )
    auth = parser.add_argument_group("authentication")
    auth.add_argument(
        "--auth-mode",
        choices=("none", "token", "hmac"),
        default=env("AUTH_MODE", "none"),
        help="none (local use only), token (Authorization: Bearer) or hmac "
        "(X-Crawljob-Signature: sha256=<hex>) (CRAWLJOB_AUTH_MODE)",
    )
    auth.add_argument("--auth-token", default=env("AUTH_TOKEN"), help="bearer token (CRAWLJOB_AUTH_TOKEN)")
    auth.add_argument(
        "--auth-token-file",
        default=env("AUTH_TOKEN_FILE"),
        help="file with the token (CRAWLJOB_AUTH_TOKEN_FILE)",
    )
    auth.add_argument("--hmac-key", default=env("HMAC_KEY"), help="HMAC-SHA256 key (CRAWLJOB_HMAC_KEY)")
    auth.add_argument(
        "--hmac-key-file", default=env("HMAC_KEY_FILE"), help="file with the key (CRAWLJOB_HMAC_KEY_FILE)"
    )
    filters = parser.add_argument_group("filters (comma lists; empty allows all)")
    filters.add_argument(
        "--allowed-buckets", default=env("ALLOWED_BUCKETS"), help="(CRAWLJOB_ALLOWED_BUCKETS)"
    )
    filters.add_argument("--key-prefixes", default=env("KEY_PREFIXES"), help="(CRAWLJOB_KEY_PREFIXES)")
    filters.add_argument(
        "--key-suffixes", default=env("KEY_SUFFIXES"), help="e.g. .csv,.csv.gz (CRAWLJOB_KEY_SUFFIXES)"
    )
    filters.add_argument(
        "--default-output-uri",
        default=env("DEFAULT_OUTPUT_URI"),
        help="where crawls write (the operator's setting): events under it are ignored, a loop guard "
        "(CRAWLJOB_DEFAULT_OUTPUT_URI; crawljob-output/ in any bucket is always guarded)",
    )
    parser.add_argument(
        "--resolve-versions",
        choices=("true", "false"),
        default=env("RESOLVE_VERSIONS", "false"),
        help="for a minimal {bucket, object: {key}} event without eTag/versionId, ask S3 (HEAD, with "
        "the standard AWS_* environment) for the current version, so that each upload of a key is its "
        "own CrawlJob; false: name by key, and say so in the answer (CRAWLJOB_RESOLVE_VERSIONS)",
    )
    sns = parser.add_argument_group("SNS")
    sns.add_argument(
        "--sns-topic-arns",
        default=env("SNS_TOPIC_ARNS"),
        help="topics whose subscriptions are confirmed and whose messages are accepted "
        "(CRAWLJOB_SNS_TOPIC_ARNS; empty: every SNS message is refused with 403)",
    )
    sns.add_argument(
        "--sns-cert-host-pattern",
        default=env("SNS_CERT_HOST_PATTERN", defaults.sns_cert_host_pattern),
        help="regular expression the https host of SNS certificate and confirmation URLs must match "
        "(CRAWLJOB_SNS_CERT_HOST_PATTERN)",
    )
    sns.add_argument(
        "--sns-cert-subject-pattern",
        default=env("SNS_CERT_SUBJECT_PATTERN", defaults.sns_cert_subject_pattern),
        help="regular expression the signing certificate's subject CN or a DNS name must match "
        "(CRAWLJOB_SNS_CERT_SUBJECT_PATTERN)",
    )
    sns.add_argument(
        "--sns-max-age-seconds",
        type=float,
        default=env("SNS_MAX_AGE_SECONDS", defaults.sns_max_age_seconds),
        help="refuse SNS messages whose signed Timestamp is older (plus 300 s of clock skew): "
        "SNS retries for at most 3600 s (CRAWLJOB_SNS_MAX_AGE_SECONDS)",
    )
    sns.add_argument(
        "--sns-ca-file",
        default=env("SNS_CA_FILE"),
        help="CA bundle for fetching SNS certificates (CRAWLJOB_SNS_CA_FILE; default: system CAs)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=env("MAX_BODY_BYTES", defaults.max_body_bytes),
        help="larger bodies answer 413 (CRAWLJOB_MAX_BODY_BYTES)",
    )
    parser.add_argument(
        "--max-records",
        type=int,
        default=env("MAX_RECORDS", defaults.max_records),
        help="most S3 records one delivery may hold; more answer 413 (CRAWLJOB_MAX_RECORDS)",
    )
    parser.add_argument(
        "--create-concurrency",
        type=int,
        default=env("CREATE_CONCURRENCY", defaults.create_concurrency),
        help="CrawlJob creates in flight per request (CRAWLJOB_CREATE_CONCURRENCY)",
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=env("LOG_FORMAT", "json"),
        help="one line per request as JSON or text (CRAWLJOB_LOG_FORMAT)",
    )
    add_kube_flags(parser, environ)
    return parser


def receiver_settings(args: argparse.Namespace) -> ReceiverSettings:
    """Validated settings from parsed flags; ValueError with a readable message when inconsistent."""
    import re

    from crawljob.events import bucket_name_problem, output_location
    from crawljob.receiver.auth import AuthSettings

    token = read_secret(args.auth_token, args.auth_token_file)
    hmac_key = read_secret(args.hmac_key, args.hmac_key_file)
    AuthSettings(args.auth_mode, token, hmac_key)  # raises ValueError when a secret is missing
    if args.max_body_bytes < 1024:
        raise ValueError("--max-body-bytes must be at least 1024")
    for flag, pattern in (
        ("--sns-cert-host-pattern", args.sns_cert_host_pattern),
        ("--sns-cert-subject-pattern", args.sns_cert_subject_pattern),
    ):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{flag} is not a regular expression: {exc}") from exc
    if args.default_output_uri:
        output_location(args.default_output_uri)
    allowed_buckets = split_list(args.allowed_buckets)
    for bucket in (*allowed_buckets, *([args.default_bucket] if args.default_bucket else [])):
        problem = bucket_name_problem(bucket)
        if problem:
            raise ValueError(f"bucket {bucket!r} in the settings is not a valid S3 bucket name ({problem})")
    if int(args.max_records) < 1 or int(args.create_concurrency) < 1:
        raise ValueError("--max-records and --create-concurrency must be at least 1")
    if float(args.sns_max_age_seconds) <= 0:
        raise ValueError("--sns-max-age-seconds must be positive")
    return ReceiverSettings(
        host=args.host,
        port=int(args.port),
        metrics_port=_metrics_port(int(args.metrics_port), int(args.port)),
        namespace=args.namespace,
        kube_server=args.kube_server,
        kubeconfig=args.kubeconfig,
        default_bucket=args.default_bucket,
        auth_mode=args.auth_mode,
        auth_token=token,
        hmac_key=hmac_key,
        allowed_buckets=allowed_buckets,
        key_prefixes=split_list(args.key_prefixes),
        key_suffixes=split_list(args.key_suffixes),
        sns_topic_arns=split_list(args.sns_topic_arns),
        sns_cert_host_pattern=args.sns_cert_host_pattern,
        sns_cert_subject_pattern=args.sns_cert_subject_pattern,
        sns_ca_file=args.sns_ca_file,
        sns_max_age_seconds=float(args.sns_max_age_seconds),
        max_body_bytes=int(args.max_body_bytes),
        max_records=int(args.max_records),
        create_concurrency=int(args.create_concurrency),
        log_format=args.log_format,
        default_output_uri=args.default_output_uri,
        resolve_versions=args.resolve_versions == "true",
    )


def _metrics_port(metrics_port: int, port: int) -> int:
    if not 0 <= metrics_port <= 65535:
        raise ValueError(f"--metrics-port must be 0 to 65535, got {metrics_port}")
    if metrics_port and metrics_port == port:
        raise ValueError("--metrics-port must differ from --port (0 serves /metrics on the webhook port)")
    return metrics_port
