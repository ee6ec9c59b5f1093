"""SourceForbidden for real: a moto server that enforces IAM, the worker as a child process over HTTP.

moto accepts any credentials until told otherwise ("IAM-like access control" in its docs): with
`INITIAL_NO_AUTH_ACTION_COUNT`, or at run time `POST /moto-api/reset-auth` with the count, requests
after that many are authenticated against moto's IAM (unknown access keys fail, signatures are
checked, policies are evaluated). This server is separate from the session's `local_s3`, so no
other test ever meets enforcement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from crawljob.local.s3 import run_local_s3

DENY_LANDING_READS = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::landing/*"},
    ],
}
CSV = b"device,temp\nsensor-1,21.5\nsensor-2,22.0\n"


@dataclass(frozen=True)
class EnforcingS3:
    endpoint: str
    access_key: str
    secret_key: str


@pytest.fixture(scope="module")
def enforcing_s3() -> Iterator[EnforcingS3]:
    """A moto server enforcing IAM, holding s3://landing/data.csv and s3://open/data.csv, and an IAM
    user allowed everything in S3 except reading objects under `landing`."""
    with run_local_s3() as s3:
        admin = {
            "endpoint_url": s3.endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        storage: Any = boto3.client("s3", **admin)
        for bucket in ("landing", "open"):
            storage.create_bucket(Bucket=bucket)
            storage.put_object(Bucket=bucket, Key="data.csv", Body=CSV)
        iam: Any = boto3.client("iam", **admin)
        iam.create_user(UserName="crawljob-worker")
        iam.put_user_policy(
            UserName="crawljob-worker",
            PolicyName="no-landing-reads",
            PolicyDocument=json.dumps(DENY_LANDING_READS),
        )
        key = iam.create_access_key(UserName="crawljob-worker")["AccessKey"]
        # From now on every request is authenticated and authorised.
        request = urllib.request.Request(
            s3.endpoint + "/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form content type would hide the body
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["status"] == "ok"
        yield EnforcingS3(s3.endpoint, key["AccessKeyId"], key["SecretAccessKey"])


def run_worker_process(
    s3: EnforcingS3, source: str, tmp_path: Path, access_key: str, secret_key: str
) -> tuple[int, str, dict[str, Any]]:
    """`python -m crawljob_worker` with only these credentials; exit code, stderr, termination message."""
    termination = tmp_path / "termination-log"
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "CRAWLJOB_"))
    }
    environment.update(
        AWS_ENDPOINT_URL_S3=s3.endpoint,
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    done = subprocess.run(
        [sys.executable, "-m", "crawljob_worker", source, "--output", str(tmp_path / "out"),
         "--termination-log", str(termination), "--retries", "1"],
        env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, done.stderr, json.loads(termination.read_text())


def test_the_policy_lets_the_worker_read_other_buckets(enforcing_s3: EnforcingS3, tmp_path: Path) -> None:
    code, stderr, message = run_worker_process(
        enforcing_s3, "s3://open/data.csv", tmp_path, enforcing_s3.access_key, enforcing_s3.secret_key
    )
    assert (code, message["reason"], message["rowsWritten"]) == (0, "Succeeded", 2), stderr


def test_a_denied_read_exits_4_source_forbidden(enforcing_s3: EnforcingS3, tmp_path: Path) -> None:
    code, stderr, message = run_worker_process(
        enforcing_s3, "s3://landing/data.csv", tmp_path, enforcing_s3.access_key, enforcing_s3.secret_key
    )
    assert code == 4, stderr
    assert message["reason"] == "SourceForbidden"
    assert "s3://landing/data.csv" in message["message"]
    assert "AccessDenied" in message["message"]
    assert "crawljob-worker: SourceForbidden: " in stderr
    assert message["rowsRead"] == 0
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_unknown_credentials_exit_4_source_forbidden(enforcing_s3: EnforcingS3, tmp_path: Path) -> None:
    code, stderr, message = run_worker_process(
        enforcing_s3, "s3://open/data.csv", tmp_path, "AKIAUNKNOWNKEY000000", "not-a-secret"
    )
    assert code == 4, stderr
    assert message["reason"] == "SourceForbidden"
    assert "InvalidAccessKeyId" in message["message"]
