"""Shared fixtures: the Kubernetes API emulator over HTTP, a local S3 server, API clients."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest

from crawljob import kube
from crawljob.local.emulator import Emulator, serve_emulator
from crawljob.local.s3 import LocalS3, run_local_s3
from fakes.receiver import MakeReceiver, receiver_factory


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[Emulator, str]]:
    """A fresh Kubernetes API emulator (built-ins + the CrawlJob CRD) and its URL."""
    async with serve_emulator() as served:
        yield served


@pytest.fixture
def make_receiver(emulator: tuple[Emulator, str], aiohttp_client: Any) -> MakeReceiver:
    """make(**overrides): a receiver on the emulator, in namespace fakes.receiver.RECEIVER_NAMESPACE
    (the SNS tests define their own, with the fake SNS's certificates)."""
    return receiver_factory(emulator[1], aiohttp_client)


@pytest.fixture
async def kube_client(emulator: tuple[Emulator, str]) -> AsyncIterator[kube.KubeClient]:
    """An API client connected to the emulator."""
    async with kube.KubeClient(kube.Connection(server=emulator[1])) as client:
        yield client


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    """One moto S3 server for the whole session (buckets are per test)."""
    with run_local_s3() as s3:
        yield s3


@pytest.fixture
def s3_env(local_s3: LocalS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The local S3's AWS_* variables, set for this test: the worker finds it the way it finds any S3."""
    environment = local_s3.environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def s3_client(local_s3: LocalS3) -> Any:
    """A boto3 S3 client talking to the local S3 server."""
    env = local_s3.environment()
    return boto3.client(
        "s3",
        endpoint_url=local_s3.endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """A new, empty bucket on the local S3."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name
