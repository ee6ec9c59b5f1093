"""The minimal shape `{bucket, object: {key}}`: the receiver HEADs the object (moto's S3 over HTTP) so
that each upload of a key is its own CrawlJob, or names it by key and says so."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from crawljob import kube, resource
from crawljob.receiver import versions
from fakes.receiver import RECEIVER_NAMESPACE, MakeReceiver

NAMESPACE = RECEIVER_NAMESPACE
README = Path(__file__).resolve().parents[2] / "README.md"


async def post(client: TestClient[Any, Any], body: Any, status: int = 202) -> dict[str, Any]:
    response = await client.post("/v1/trigger", json=body)
    answer: dict[str, Any] = await response.json()
    assert response.status == status, answer
    return answer


async def test_each_upload_is_a_new_crawljob_and_a_redelivery_a_duplicate(
    make_receiver: MakeReceiver,
    kube_client: kube.KubeClient,
    s3_env: dict[str, str],
    s3_client: Any,
    bucket: str,
) -> None:
    client = await make_receiver(resolve_versions=True)
    minimal = {"bucket": bucket, "object": {"key": "daily/readings.csv"}}
    s3_client.put_object(Bucket=bucket, Key="daily/readings.csv", Body=b"a,b\n1,2\n")
    [first] = (await post(client, minimal))["crawljobs"]
    assert (first["status"], first["note"]) == ("created", "eTag resolved with a HEAD")
    [again] = (await post(client, minimal))["crawljobs"]
    assert (again["status"], again["name"]) == ("duplicate", first["name"])
    # The same upload announced by S3 itself (eTag in the record) is the same CrawlJob.
    etag = s3_client.head_object(Bucket=bucket, Key="daily/readings.csv")["ETag"].strip('"')
    record = {"s3": {"bucket": {"name": bucket}, "object": {"key": "daily/readings.csv", "eTag": etag}}}
    [from_s3] = (await post(client, {"Records": [{"eventName": "ObjectCreated:Put", **record}]}))["crawljobs"]
    assert (from_s3["status"], from_s3["name"]) == ("duplicate", first["name"])
    s3_client.put_object(Bucket=bucket, Key="daily/readings.csv", Body=b"a,b\n3,4\n")
    [second] = (await post(client, minimal))["crawljobs"]
    assert second["status"] == "created" and second["name"] != first["name"]
    stored = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, second["name"])
    assert stored["spec"]["source"]["eTag"] == s3_client.head_object(Bucket=bucket, Key="daily/readings.csv")[
        "ETag"
    ].strip('"')
    assert stored["spec"]["source"]["size"] == 8


async def test_a_versioned_bucket_names_the_version(
    make_receiver: MakeReceiver,
    kube_client: kube.KubeClient,
    s3_env: dict[str, str],
    s3_client: Any,
    bucket: str,
) -> None:
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    version = s3_client.put_object(Bucket=bucket, Key="v.csv", Body=b"x\n1\n")["VersionId"]
    client = await make_receiver(resolve_versions=True)
    [item] = (await post(client, {"bucket": bucket, "object": {"key": "v.csv"}}))["crawljobs"]
    assert item["note"] == "versionId resolved with a HEAD"
    stored = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, item["name"])
    assert stored["spec"]["source"]["versionId"] == version
    assert item["name"] == resource.crawljob_name(resource.ObjectRef(bucket, "v.csv", version_id=version))


async def test_without_s3_access_the_object_is_named_by_key_and_the_answer_says_so(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient
) -> None:
    client = await make_receiver()
    [item] = (await post(client, {"bucket": "inbox", "object": {"key": "k.csv"}}))["crawljobs"]
    assert item["note"] == versions.NAMED_BY_KEY
    assert item["name"] == resource.crawljob_name(resource.ObjectRef("inbox", "k.csv"))
    # An event that names its version needs no HEAD and gets no note.
    [named] = (await post(client, {"bucket": "inbox", "object": {"key": "k.csv", "eTag": "abc"}}))[
        "crawljobs"
    ]
    assert "note" not in named


async def test_a_missing_object_answers_400_naming_the_key(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient, s3_env: dict[str, str], bucket: str
) -> None:
    client = await make_receiver(resolve_versions=True)
    answer = await post(client, {"bucket": bucket, "object": {"key": "absent.csv"}}, status=400)
    assert answer["field"] == "object.key" and "does not exist" in answer["error"]
    assert await kube_client.list(kube.CRAWLJOBS, NAMESPACE) == []


async def test_unreachable_s3_answers_503_so_the_sender_retries(
    make_receiver: MakeReceiver,
    kube_client: kube.KubeClient,
    monkeypatch: pytest.MonkeyPatch,
    s3_env: dict[str, str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    client = await make_receiver(resolve_versions=True)
    response = await client.post(
        "/v1/trigger", json={"bucket": "unreachable-bucket", "object": {"key": "k.csv"}}
    )
    assert response.status == 503 and response.headers["Retry-After"]
    assert "cannot be reached" in (await response.json())["error"]
    assert await kube_client.list(kube.CRAWLJOBS, NAMESPACE) == []


def readme_curl_body() -> dict[str, Any]:
    """The JSON body of the README's curl example."""
    command = re.search(r"```sh\n(curl .*?)\n```", README.read_text(), re.DOTALL)
    assert command is not None
    words = shlex.split(command.group(1).replace("\\\n", " "))
    body: dict[str, Any] = json.loads(words[words.index("-d") + 1])
    return body


async def test_the_readme_curl_example_names_the_upload_it_means(
    make_receiver: MakeReceiver, kube_client: kube.KubeClient, s3_env: dict[str, str], s3_client: Any
) -> None:
    body = readme_curl_body()
    s3_client.create_bucket(Bucket=body["bucket"])
    s3_client.put_object(Bucket=body["bucket"], Key=body["object"]["key"], Body=b"t,v\n1,2\n")
    client = await make_receiver(resolve_versions=True)
    [item] = (await post(client, body))["crawljobs"]
    assert item["status"] == "created" and item["note"] == "eTag resolved with a HEAD"
    stored = await kube_client.get(kube.CRAWLJOBS, NAMESPACE, item["name"])
    assert stored["spec"]["source"]["eTag"]
