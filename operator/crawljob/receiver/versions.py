"""The minimal shape `{bucket, object: {key}}` names no version: resolve the current one with a HEAD.

With S3 read access (`--resolve-versions`, chart `receiver.resolveVersions`) the receiver asks S3 for
the object's versionId/eTag, so a new upload of a key is a new CrawlJob and a redelivery of the same
upload a duplicate, and the same object posted as an S3 event and as a minimal body gets one
CrawlJob. Without access the CrawlJob is named by bucket and key alone, and the answer says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from crawljob import events
from crawljob.resource import ObjectRef

NAMED_BY_KEY = (
    "named by bucket and key only: the event gives no eTag or versionId and the receiver does not "
    "resolve them (--resolve-versions, chart receiver.resolveVersions); a new upload of this key "
    "posted the same way is a duplicate"
)


class ObjectMissing(Exception):
    """The HEAD says there is no such object: nothing to crawl."""


class S3Unavailable(Exception):
    """S3 could not answer the HEAD (network, throttling, server error): retry the delivery."""


def needs_version(ref: ObjectRef) -> bool:
    """Whether *ref* names no version at all (no versionId, eTag or sequencer)."""
    return not ref.identity()


def with_head(ref: ObjectRef, head: dict[str, Any]) -> ObjectRef:
    """*ref* completed from a HeadObject answer (an unversioned bucket's "null" version is none)."""
    version = head.get("VersionId")
    return dataclasses.replace(
        ref,
        version_id=version if version and version != "null" else None,
        etag=str(head.get("ETag") or "").strip('"') or None,
        size=int(head["ContentLength"]) if head.get("ContentLength") is not None else ref.size,
    )


def make_client() -> Any:
    """A botocore S3 client from the standard AWS_* environment (endpoint, region, credentials)."""
    import boto3  # lazily: only receivers that resolve versions need it

    return boto3.client("s3")


async def head(client: Any, ref: ObjectRef) -> dict[str, Any]:
    """HeadObject of *ref* in a thread; ObjectMissing on 404, S3Unavailable when S3 cannot answer."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer: dict[str, Any] = await asyncio.to_thread(client.head_object, Bucket=ref.bucket, Key=ref.key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchKey", "NotFound"):
            raise ObjectMissing(f"s3://{ref.bucket}/{ref.key} does not exist") from exc
        if code in ("403", "AccessDenied", "Forbidden"):
            raise PermissionError(f"no read access to s3://{ref.bucket}/{ref.key}") from exc
        raise S3Unavailable(f"S3 answered {code} to the HEAD of s3://{ref.bucket}/{ref.key}") from exc
    except BotoCoreError as exc:
        raise S3Unavailable(
            f"S3 cannot be reached for the HEAD of s3://{ref.bucket}/{ref.key}: {exc}"
        ) from exc
    return answer


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The targets to create, and a note per target (by index) on how each was named."""

    targets: list[events.Target]
    notes: dict[int, str]


async def resolve(client: Any | None, targets: Sequence[events.Target]) -> Resolved:
    """Complete the targets that name no version with a HEAD (when *client* is set); note the rest.

    An object that does not exist raises ObjectMissing; S3 trouble raises S3Unavailable; a HEAD
    refused for lack of permission names the object by key (with a note saying why).
    """
    resolved: list[events.Target] = []
    notes: dict[int, str] = {}
    for index, target in enumerate(targets):
        if not needs_version(target.ref):
            resolved.append(target)
            continue
        if client is None:
            notes[index] = NAMED_BY_KEY
            resolved.append(target)
            continue
        try:
            answer = await head(client, target.ref)
        except PermissionError as exc:
            notes[index] = f"{exc}: " + NAMED_BY_KEY.split(": ", 1)[0]
            resolved.append(target)
            continue
        ref = with_head(target.ref, answer)
        notes[index] = "versionId resolved with a HEAD" if ref.version_id else "eTag resolved with a HEAD"
        resolved.append(dataclasses.replace(target, ref=ref))
    return Resolved(resolved, notes)
