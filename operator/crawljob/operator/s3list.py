"""Listing a bucket prefix for sweeps: ListObjectsV2, or ListObjectVersions in a versioned bucket.

Paginated and streamed (one page of at most 1,000 objects in memory at a time); boto3's blocking
calls run in a worker thread so the operator's event loop keeps serving watch events.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from crawljob.operator.sweep import Listed


class ListingError(Exception):
    """Listing failed; *code* is S3's error code (AccessDenied, NoSuchBucket, …) or "Unavailable"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class S3Lister:
    """A boto3 S3 client (endpoint and credentials from the standard AWS_* environment) that lists."""

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self.calls = 0  # S3 API requests made (the sweep benchmark reports them)

    @property
    def client(self) -> Any:
        if self._client is None:
            config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 4})
            self._client = boto3.client("s3", config=config)
        return self._client

    async def versioned(self, bucket: str) -> bool:
        """Whether the bucket keeps versions (Enabled or Suspended): events then name versions."""
        answer = await self._call(self.client.get_bucket_versioning, Bucket=bucket)
        return answer.get("Status") in ("Enabled", "Suspended")

    async def pages(
        self, bucket: str, prefix: str, start_after: str | None, versioned: bool
    ) -> AsyncIterator[list[Listed]]:
        """The current objects under *prefix*, in key order, a page at a time; after *start_after*."""
        if versioned:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if start_after:
                params["KeyMarker"] = start_after
            pages = self.client.get_paginator("list_object_versions").paginate(**params)
        else:
            params = {"Bucket": bucket, "Prefix": prefix}
            if start_after:
                params["StartAfter"] = start_after
            pages = self.client.get_paginator("list_objects_v2").paginate(**params)
        iterator = iter(pages)
        while True:
            page = await self._call(_next_page, iterator)
            if page is None:
                return
            if versioned:
                yield [
                    _listed(item, item.get("VersionId"))
                    for item in page.get("Versions") or []
                    if item.get("IsLatest")
                ]
            else:
                yield [_listed(item, None) for item in page.get("Contents") or []]

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error") or {}
            raise ListingError(str(error.get("Code") or "Error"), str(error.get("Message") or exc)) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise ListingError("Unavailable", str(exc)) from exc


def _next_page(iterator: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
    return next(iterator, None)


def _listed(item: dict[str, Any], version_id: str | None) -> Listed:
    modified = item["LastModified"]
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=datetime.UTC)
    return Listed(
        key=str(item["Key"]),
        last_modified=modified,
        etag=item.get("ETag"),
        version_id=version_id,
        size=item.get("Size"),
    )
