"""The source byte stream: an S3 object (resuming with Range GETs) or a local file, and decompression.

Both sources count the bytes they delivered (`offset`), which is what progress reports. The S3 stream
survives transient errors by reopening at exactly the next undelivered byte, pinned to the eTag (or
version) it started with, so nothing is lost or read twice and a replaced object is never mixed in.
"""

from __future__ import annotations

import functools
import gzip
import http.client
import io
import logging
import random
import time
import zlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawljob_worker.errors import WorkerError, bad_input, source_forbidden, source_not_found, transient
from crawljob_worker.uri import Location

if TYPE_CHECKING:
    import botocore.exceptions

log = logging.getLogger("crawljob_worker.source")

GZIP_MAGIC = b"\x1f\x8b"
# Bytes asked of the HTTP body at a time: what a dropped connection can take with it (urllib3 drops a
# partly filled read), so small enough to resume close to the break, large enough to be cheap.
READ_SIZE = 256 * 1024
# Other containers we recognise only to refuse them with a clear message.
FOREIGN_MAGIC = {
    b"PK\x03\x04": "a ZIP archive",
    b"BZh": "bzip2-compressed data",
    b"\xfd7zXZ\x00": "xz-compressed data",
    b"\x28\xb5\x2f\xfd": "zstd-compressed data",
    b"PAR1": "a Parquet file",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"ORC": "an ORC file",
    b"Obj\x01": "an Avro file",
}
NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404", "NotFound"}
FORBIDDEN_CODES = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
}


@functools.cache
def network_errors() -> tuple[type[BaseException], ...]:
    """What a failed S3 request or body read raises. botocore and urllib3 are imported here, on the
    first S3 request, so that a run on a local file never imports them (~0.1 s and ~10 MB)."""
    import botocore.exceptions
    import urllib3.exceptions

    return (
        # BotoCoreError covers ResponseStreamingError, ReadTimeoutError and IncompleteReadError.
        botocore.exceptions.BotoCoreError,
        urllib3.exceptions.HTTPError,
        HTTPException,
        ConnectionError,
        TimeoutError,
        OSError,
    )


@dataclass(frozen=True)
class SourceInfo:
    """What the source is: its URI, size and identity (eTag/version on S3)."""

    uri: str
    size: int | None
    etag: str | None = None
    version_id: str | None = None


def s3_client(max_attempts: int = 5, connections: int = 1) -> Any:
    """An S3 client made by botocore, the library under boto3; the endpoint comes from
    AWS_ENDPOINT_URL_S3 as botocore reads it itself.

    Reading an object needs nothing of boto3 but its client, and `import boto3` costs ~0.12 s more
    than botocore alone (mostly s3transfer), on the path before the GET is sent (see `opening`).
    Parts are uploaded with boto3's `S3Transfer`, exactly what boto3's `client.upload_file` does;
    it is imported when the first part is written to S3."""
    import botocore.session
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=max(10, connections + 2),
    )
    return botocore.session.get_session().create_client("s3", config=config)


def error_code(error: botocore.exceptions.ClientError) -> str:
    body = error.response.get("Error", {}) if isinstance(error.response, dict) else {}
    code = str(body.get("Code") or "")
    status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code or status


def classify_source_error(error: botocore.exceptions.ClientError, uri: str) -> WorkerError:
    """A failed GET of the source as a WorkerError: missing, forbidden, changed or transient."""
    code = error_code(error)
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in NOT_FOUND_CODES or status == 404:
        return source_not_found(f"{uri} does not exist ({code})")
    if code in FORBIDDEN_CODES or status == 403:
        return source_forbidden(
            f"access to {uri} is denied ({code}); check the worker's S3 credentials and policy"
        )
    if code == "PreconditionFailed" or status == 412:
        return source_not_found(f"{uri} was replaced while it was being read; the new version is a new crawl")
    if code == "InvalidRange" or status == 416:
        return source_not_found(f"{uri} is shorter than when the read started")
    return transient(f"reading {uri} failed: {code} {error}")


def s3_request(call: Callable[..., Any], location: Location, **extra: Any) -> Any:
    """*call* (`get_object`, `head_object`) on the source object with the *extra* arguments that are
    set; a refusal as WorkerError (missing, forbidden, changed), a network failure as Transient."""
    arguments: dict[str, Any] = {"Bucket": location.bucket, "Key": location.path}
    arguments.update({name: value for name, value in extra.items() if value})
    from botocore.exceptions import ClientError

    try:
        return call(**arguments)
    except ClientError as error:
        raise classify_source_error(error, location.uri()) from error
    except network_errors() as error:
        raise transient(f"cannot reach S3 for {location.uri()}: {error}") from error


def _http_response(body: Any) -> http.client.HTTPResponse | None:
    """The http.client response under a botocore StreamingBody and its urllib3 response, while
    urllib3 has read nothing of it itself (else its own buffer holds the next bytes)."""
    raw = getattr(body, "_raw_stream", None)
    response = getattr(raw, "_fp", None)
    if not isinstance(response, http.client.HTTPResponse) or getattr(raw, "_fp_bytes_read", 1) != 0:
        return None
    return response


class S3Stream(io.RawIOBase):
    """A readable S3 object that reconnects with a Range GET after transient read errors."""

    def __init__(
        self,
        client: Any,
        location: Location,
        version_id: str | None = None,
        retries: int = 8,
        backoff: Callable[[int], float] | None = None,
        span: tuple[int, int] | None = None,
        etag: str | None = None,
    ) -> None:
        """*span* (first, last byte, inclusive) reads only that range of the object; *etag* pins the
        first GET to that version of the object (later ones are pinned to what the first one got)."""
        super().__init__()
        self._client = client
        self._location = location
        self._retries_left = retries
        self._backoff = backoff or (lambda attempt: min(10.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0))
        self._attempt = 0
        self._first = span[0] if span is not None else 0
        self._last: int | None = span[1] if span is not None else None
        self.offset = 0
        self.reconnects = 0
        first_range = f"bytes={self._first}-{self._last}" if span is not None else None
        response = self._get(VersionId=version_id, Range=first_range, IfMatch=None if version_id else etag)
        self.length = int(response["ContentLength"])  # the bytes this stream delivers
        self.info = SourceInfo(
            uri=location.uri(),
            size=self.length,
            etag=response.get("ETag"),
            version_id=response.get("VersionId") or version_id,
        )
        self._body = response["Body"]

    def _get(self, **extra: Any) -> Any:
        return s3_request(self._client.get_object, self._location, **extra)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as whole, whole.cast("B") as view:
            return self._readinto(view)

    def _readinto(self, view: memoryview) -> int:
        while True:
            try:
                count = self._read_body(view[:READ_SIZE])
            except network_errors() as error:
                self._reconnect(str(error))
                continue
            if not count and self.offset < self.length:
                self._reconnect(f"stream ended at byte {self.offset} of {self.length}")
                continue
            self.offset += count
            if count:
                self._attempt = 0  # progress since the last failure: back off from the start again
            return count

    def _read_body(self, view: memoryview) -> int:
        """Bytes of the body read into *view*. Straight from the socket when the HTTP response under
        botocore's and urllib3's wrappers is reachable: their `read` hands out a new bytes object
        that is copied again into the block (three copies per byte; ~0.2 s of CPU per 800 MB).
        botocore asks urllib3 not to decode the body, so the bytes are the same; a short body is
        caught by the offset check in `_readinto`."""
        response = _http_response(self._body)
        if response is not None:
            return int(response.readinto(view))
        data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _reconnect(self, error: str) -> None:
        """Reopen at the next undelivered byte, pinned to the same object, within the retry budget."""
        if self._retries_left <= 0:
            raise transient(
                f"reading {self.info.uri} kept failing at byte {self._first + self.offset}; retry budget "
                f"spent: {error}"
            )
        self._retries_left -= 1
        self.reconnects += 1
        delay = self._backoff(self._attempt)
        self._attempt += 1
        log.warning(
            "read of %s failed at byte %d (%s); resuming in %.1fs",
            self.info.uri,
            self._first + self.offset,
            error,
            delay,
        )
        time.sleep(delay)
        with suppress(*network_errors()):
            self._body.close()
        pin = {"VersionId": self.info.version_id} if self.info.version_id else {"IfMatch": self.info.etag}
        while True:
            try:
                last = "" if self._last is None else self._last
                response = self._get(Range=f"bytes={self._first + self.offset}-{last}", **pin)
                break
            except WorkerError as failure:
                if failure.reason != "Transient" or self._retries_left <= 0:
                    raise
                self._retries_left -= 1
                time.sleep(self._backoff(self._attempt))
                self._attempt += 1
        self._body = response["Body"]

    def close(self) -> None:
        if not self.closed:
            with suppress(*network_errors()):
                self._body.close()
        super().close()


class FileStream(io.RawIOBase):
    """A local file that counts the bytes it delivered."""

    def __init__(self, path: str) -> None:
        super().__init__()
        try:
            self._file = Path(path).open("rb", buffering=0)  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            raise source_not_found(f"{path} does not exist") from None
        except IsADirectoryError:
            raise source_not_found(f"{path} is a directory, not a file") from None
        except PermissionError:
            raise source_forbidden(f"{path} is not readable (permission denied)") from None
        self.offset = 0
        self.reconnects = 0
        self.info = SourceInfo(uri=str(Path(path).resolve()), size=Path(path).stat().st_size)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._file.readinto(buffer)
        self.offset += count or 0
        return count or 0

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def detect_compression(head: bytes, name: str, setting: str) -> str:
    """'gzip' or 'none' for the source, from its first bytes, its name and --compression (pure)."""
    if setting == "gzip":
        if head and not head.startswith(GZIP_MAGIC):
            raise bad_input("--compression gzip, but the source does not start with the gzip magic bytes")
        return "gzip"
    if setting == "none":
        return "none"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    for magic, what in FOREIGN_MAGIC.items():
        if head.startswith(magic):
            raise bad_input(f"the source is {what}, not CSV (supported compression: gzip)")
    if name.endswith(".gz") and head:
        log.warning("%s ends in .gz but has no gzip magic bytes; reading it as plain text", name)
    return "none"


class GzipErrors(io.RawIOBase):
    """Turns a corrupt gzip stream into a BadInput error instead of a crash."""

    def __init__(self, inner: gzip.GzipFile) -> None:
        super().__init__()
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._inner.readinto(buffer)
        except (gzip.BadGzipFile, zlib.error, EOFError) as error:
            raise bad_input(f"the gzip data is corrupt or truncated: {error}") from error


def decompressed(stream: io.RawIOBase, name: str, setting: str) -> tuple[io.BufferedIOBase, str]:
    """The text-bearing byte stream (gunzipped when needed) and the compression found."""
    buffered = io.BufferedReader(stream, buffer_size=1024 * 1024)
    head = buffered.peek(8)[:8]
    compression = detect_compression(head, name, setting)
    if compression == "gzip":
        return io.BufferedReader(
            GzipErrors(gzip.GzipFile(fileobj=buffered, mode="rb")), 1024 * 1024
        ), compression
    return buffered, compression
