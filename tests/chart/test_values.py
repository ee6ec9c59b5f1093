"""Values become the configuration the contract names; values.schema.json rejects bad values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from chart_render import CHART, ROOT, VALUES_ALL, Manifest, env_of, named, render_error

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def containers(manifests: list[Manifest], deployment: str) -> Manifest:
    (container,) = named(manifests, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return container


def contract_names() -> set[str]:
    """CRAWLJOB_* names listed in docs/contracts.md, "Configuration names"."""
    text = (ROOT / "docs" / "contracts.md").read_text()
    section = text.split("## Configuration names", 1)[1]
    return set(re.findall(r"CRAWLJOB_[A-Z_]+", section))


def test_chart_sets_only_configuration_names_from_the_contract(manifests: list[Manifest]) -> None:
    known = contract_names()
    for name in ("crawl-receiver", "crawl-operator", "demo-crawljob-receiver", "demo-crawljob-operator"):
        deployments = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == name]
        for deployment in deployments:
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            names = {n for n in env_of(container) if n.startswith("CRAWLJOB_")}
            assert names <= known, f"{name}: not in docs/contracts.md: {sorted(names - known)}"


def test_receiver_configuration_from_all_options(all_manifests: list[Manifest]) -> None:
    container = containers(all_manifests, "crawl-receiver")
    assert container["args"] == ["receiver"]
    assert env_of(container) == {
        "CRAWLJOB_HOST": "0.0.0.0",
        "CRAWLJOB_PORT": "9090",
        "CRAWLJOB_METRICS_PORT": "9095",
        "CRAWLJOB_NAMESPACE": "crawls",
        "CRAWLJOB_LOG_FORMAT": "text",
        "CRAWLJOB_AUTH_MODE": "hmac",
        "CRAWLJOB_HMAC_KEY_FILE": "/etc/crawljob/webhook/signing-key",
        "CRAWLJOB_MAX_BODY_BYTES": "2097152",
        "CRAWLJOB_DEFAULT_BUCKET": "incoming",
        "CRAWLJOB_ALLOWED_BUCKETS": "incoming,landing",
        "CRAWLJOB_KEY_PREFIXES": "uploads/,drops/",
        "CRAWLJOB_KEY_SUFFIXES": ".csv,.csv.gz",
        "CRAWLJOB_SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:123456789012:uploads",
        "CRAWLJOB_SNS_CERT_HOST_PATTERN": r"^sns\.[a-z0-9-]+\.amazonaws\.com$",
        "CRAWLJOB_SNS_MAX_AGE_SECONDS": "3600",
        "CRAWLJOB_MAX_RECORDS": "100",
        "CRAWLJOB_DEFAULT_OUTPUT_URI": "s3://processed/crawljob/",
        # receiver.resolveVersions: S3 read access, from the same s3.* values as the workers'.
        "CRAWLJOB_RESOLVE_VERSIONS": "true",
        "AWS_ENDPOINT_URL_S3": "http://minio.storage.svc:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": {"secretKeyRef": {"name": "s3-credentials", "key": "access-key"}},
        "AWS_SECRET_ACCESS_KEY": {"secretKeyRef": {"name": "s3-credentials", "key": "secret-key"}},
        "EXTRA_RECEIVER": "1",
    }
    pod = named(all_manifests, "Deployment", "crawl-receiver")["spec"]["template"]["spec"]
    webhook = [v for v in pod["volumes"] if v["name"] == "webhook"]
    assert webhook == [{"name": "webhook", "secret": {"secretName": "webhook-keys", "defaultMode": 0o440}}]


def test_receiver_defaults_use_a_token_file_from_the_generated_secret(
    default_manifests: list[Manifest],
) -> None:
    env = env_of(containers(default_manifests, "demo-crawljob-receiver"))
    assert env["CRAWLJOB_AUTH_MODE"] == "token"
    assert env["CRAWLJOB_AUTH_TOKEN_FILE"] == "/etc/crawljob/webhook/token"
    assert env["CRAWLJOB_NAMESPACE"] == "crawljob-system"
    assert "CRAWLJOB_ALLOWED_BUCKETS" not in env


def test_operator_configuration_from_all_options(all_manifests: list[Manifest]) -> None:
    container = containers(all_manifests, "crawl-operator")
    assert container["args"] == ["operator"]
    assert container["image"] == "registry.example.com/crawljob/operator:0.1.0-test"
    env = env_of(container)
    worker_env = json.loads(env.pop("CRAWLJOB_WORKER_ENV"))
    assert json.loads(env.pop("CRAWLJOB_WORKER_RESOURCES")) == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "4", "memory": "4Gi"},
    }
    assert json.loads(env.pop("CRAWLJOB_WORKER_SECURITY_CONTEXT"))["runAsUser"] == 20000
    assert env == {
        "CRAWLJOB_NAMESPACE": "crawls",
        "CRAWLJOB_HEALTH_PORT": "9091",
        "CRAWLJOB_LOG_FORMAT": "text",
        "CRAWLJOB_LIVENESS_SECONDS": "300",
        "CRAWLJOB_WATCH_INACTIVITY_SECONDS": "70",
        "CRAWLJOB_WORKER_IMAGE": "registry.example.com/crawljob/worker:0.1.0-test",
        "CRAWLJOB_ALLOWED_IMAGES": "registry.example.com/crawljob/*",
        "CRAWLJOB_ALLOW_SERVICE_ACCOUNT_OVERRIDE": "true",
        "CRAWLJOB_ALLOW_ENV_OVERRIDE": "false",
        "CRAWLJOB_WORKER_SERVICE_ACCOUNT": "crawl-worker",
        "CRAWLJOB_DEFAULT_OUTPUT_URI": "s3://processed/crawljob/",
        "CRAWLJOB_MAX_ACTIVE": "20",
        "CRAWLJOB_BACKOFF_LIMIT": "5",
        "CRAWLJOB_MAX_SHARDS": "16",
        "CRAWLJOB_SHARD_PARALLELISM": "4",
        "CRAWLJOB_FINISHED_TTL_SECONDS": "86400",
        "CRAWLJOB_SUCCESSFUL_HISTORY_LIMIT": "100",
        "CRAWLJOB_FAILED_HISTORY_LIMIT": "50",
        "CRAWLJOB_JOB_TTL_SECONDS": "3600",
        "CRAWLJOB_NOTIFY_SINKS": "https://events.example.com/crawljob,http://knative-broker.default.svc/",
        # CrawlSource sweeps list buckets through the same S3 endpoint as the workers.
        "AWS_ENDPOINT_URL_S3": "http://minio.storage.svc:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "EXTRA_OPERATOR": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    assert worker_env == [
        {"name": "AWS_ENDPOINT_URL_S3", "value": "http://minio.storage.svc:9000"},
        {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"},
        {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "access-key"}},
        },
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "secret-key"}},
        },
        {"name": "CRAWLJOB_CHUNK_ROWS", "value": "50000"},
    ]


def test_operator_defaults_leave_optional_limits_unset(default_manifests: list[Manifest]) -> None:
    env = env_of(containers(default_manifests, "demo-crawljob-operator"))
    assert env["CRAWLJOB_WORKER_IMAGE"] == "crawljob/crawljob-worker:0.1.0"
    assert env["CRAWLJOB_WORKER_ENV"] == "[]"
    assert env["CRAWLJOB_MAX_ACTIVE"] == "8"
    # A CrawlJob overrides neither the service account nor the env, nor names another image.
    assert env["CRAWLJOB_ALLOW_SERVICE_ACCOUNT_OVERRIDE"] == env["CRAWLJOB_ALLOW_ENV_OVERRIDE"] == "false"
    assert "CRAWLJOB_ALLOWED_IMAGES" not in env
    for unset in ("CRAWLJOB_FINISHED_TTL_SECONDS", "CRAWLJOB_JOB_TTL_SECONDS", "CRAWLJOB_DEFAULT_OUTPUT_URI"):
        assert unset not in env


@pytest.mark.parametrize("path", [CHART / "values.yaml", VALUES_ALL], ids=["defaults", "all-options"])
def test_shipped_values_meet_the_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), SCHEMA)


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("replicas=2", "additional properties 'replicas' not allowed"),
        ("receiver.replicaCount=two", "/receiver/replicaCount"),
        ("receiver.auth.mode=basic", "/receiver/auth/mode"),
        ("receiver.ingress.enable=true", "'enable' not allowed"),
        ("operator.replicaCount=2", "/operator/replicaCount"),
        ("operator.maxActive=0", "/operator/maxActive"),
        ("crawljobNamespace=Not_A_Namespace", "/crawljobNamespace"),
        ("worker.defaultOutputUri=ftp://x/y", "/worker/defaultOutputUri"),
        ("receiver.sns.topicArns[0]=not-an-arn", "/receiver/sns/topicArns/0"),
        ("logFormat=xml", "/logFormat"),
    ],
)
def test_schema_rejects_bad_values(setting: str, complaint: str) -> None:
    assert complaint in render_error(sets=[setting])


def test_schema_rejects_a_bad_values_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("receiver:\n  resources: 512Mi\nworker:\n  env: {AWS_REGION: eu-west-1}\n")
    error = render_error([bad])
    assert "/receiver/resources" in error
    assert "/worker/env" in error
