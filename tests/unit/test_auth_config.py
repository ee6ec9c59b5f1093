"""Receiver settings from flags and CRAWLJOB_* env: secrets from env or a mounted file, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawljob.receiver import settings as config


def settings(argv: list[str], environ: dict[str, str] | None = None) -> config.ReceiverSettings:
    parser = config.receiver_parser(environ or {})
    return config.receiver_settings(parser.parse_args(argv))


def test_defaults_follow_the_contract() -> None:
    result = settings([])
    assert (result.host, result.port, result.auth_mode, result.max_body_bytes, result.log_format) == (
        "0.0.0.0",
        8080,
        "none",
        1048576,
        "json",
    )


def test_token_from_env() -> None:
    result = settings([], {"CRAWLJOB_AUTH_MODE": "token", "CRAWLJOB_AUTH_TOKEN": "from-env"})
    assert (result.auth_mode, result.auth_token) == ("token", "from-env")


def test_token_from_a_mounted_file_wins_over_env(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    environ = {
        "CRAWLJOB_AUTH_MODE": "token",
        "CRAWLJOB_AUTH_TOKEN": "from-env",
        "CRAWLJOB_AUTH_TOKEN_FILE": str(secret),
    }
    assert settings([], environ).auth_token == "from-file"


def test_hmac_key_from_file_flag(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("k3y")
    result = settings(["--auth-mode", "hmac", "--hmac-key-file", str(secret)])
    assert result.hmac_key == "k3y"


def test_flags_win_over_env() -> None:
    result = settings(["--port", "9000", "--key-suffixes", ".csv"], {"CRAWLJOB_PORT": "8081"})
    assert result.port == 9000
    assert result.key_suffixes == (".csv",)


def test_lists_are_split_on_commas() -> None:
    environ = {
        "CRAWLJOB_ALLOWED_BUCKETS": "aaa, bbb,,ccc",
        "CRAWLJOB_KEY_PREFIXES": "in/",
        "CRAWLJOB_KEY_SUFFIXES": ".csv,.csv.gz",
        "CRAWLJOB_SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:1:t",
    }
    result = settings([], environ)
    assert result.allowed_buckets == ("aaa", "bbb", "ccc")
    assert result.key_suffixes == (".csv", ".csv.gz")
    assert result.sns_topic_arns == ("arn:aws:sns:eu-west-1:1:t",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--auth-mode", "token"], "needs a token"),
        (["--auth-mode", "hmac"], "needs a key"),
        (["--max-body-bytes", "10"], "at least 1024"),
        (["--sns-cert-host-pattern", "("], "not a regular expression"),
        (["--default-output-uri", "/tmp/out"], "s3://bucket/prefix/"),
    ],
)
def test_inconsistent_settings_fail_at_start(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(argv)


def test_missing_secret_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        settings(["--auth-mode", "token", "--auth-token-file", str(tmp_path / "absent")])


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CRAWLJOB_ALLOWED_BUCKETS": "good-bucket,Bad_Bucket"}, "not a valid S3 bucket name"),
        ({"CRAWLJOB_DEFAULT_BUCKET": "a/b"}, "not a valid S3 bucket name"),
        ({"CRAWLJOB_MAX_RECORDS": "0"}, "--max-records"),
        ({"CRAWLJOB_SNS_MAX_AGE_SECONDS": "0"}, "--sns-max-age-seconds"),
        ({"CRAWLJOB_SNS_CERT_SUBJECT_PATTERN": "("}, "--sns-cert-subject-pattern"),
    ],
)
def test_hardening_settings_are_validated(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings([], environ)


def test_hardening_defaults() -> None:
    result = settings([], {})
    assert (result.max_records, result.create_concurrency, result.sns_max_age_seconds) == (100, 8, 3600.0)
    assert result.sns_topic_arns == ()  # SNS refused until topics are listed


def test_metrics_port_defaults_to_the_webhook_port_and_is_validated() -> None:
    assert settings([]).metrics_port == 0
    assert settings([], {"CRAWLJOB_METRICS_PORT": "9090"}).metrics_port == 9090
    with pytest.raises(ValueError, match="--metrics-port must differ from --port"):
        settings(["--port", "9090", "--metrics-port", "9090"])
    with pytest.raises(ValueError, match="--metrics-port must be 0 to 65535"):
        settings(["--metrics-port", "70000"])
