"""Opening the source; an S3 source before the heavy imports, so that the GET's wait overlaps them.

An S3 GET spends a while before its first byte: tens of milliseconds on S3 (plus the TLS handshake),
and on a loopback moto server about 0.5 s per 800 MB, because moto reads the whole object before it
answers. The worker needs ~0.4 s of CPU to import pandas before it can parse anything. So `__main__`
starts the GET in a thread first and imports `run` (pandas) while it waits. This module imports
neither pandas nor the parser.
"""

from __future__ import annotations

from typing import Any

from crawljob_worker.errors import source_not_found
from crawljob_worker.pipeline import Pending
from crawljob_worker.ranged import RangedS3Stream
from crawljob_worker.settings import Settings
from crawljob_worker.source import FileStream, S3Stream, s3_client
from crawljob_worker.uri import Location

SourceStream = S3Stream | RangedS3Stream | FileStream


def open_source(
    location: Location,
    *,
    version_id: str | None,
    retries: int,
    client: Any = None,
    connections: int = 1,
    range_bytes: int = 8 * 1024 * 1024,
) -> SourceStream:
    """Open the source; raises WorkerError for a missing or forbidden object. An S3 object is read
    by one GET stream, or by *connections* parallel ranged GETs of *range_bytes* each."""
    if location.is_s3:
        if not location.path or location.path.endswith("/"):
            raise source_not_found(f"{location.uri()} is not an object key")
        client = client or s3_client(connections=connections)
        if connections > 1:
            return RangedS3Stream(
                client,
                location,
                version_id=version_id,
                retries=retries,
                connections=connections,
                range_bytes=range_bytes,
            )
        return S3Stream(client, location, version_id=version_id, retries=retries)
    return FileStream(location.path)


def open_settings_source(settings: Settings, client: Any) -> SourceStream:
    """The run's source, opened as its settings say."""
    return open_source(
        settings.source_location(),
        version_id=settings.version_id,
        retries=settings.retries,
        client=client,
        connections=settings.s3_connections,
        range_bytes=settings.s3_range_bytes,
    )


def start_opening(settings: Settings) -> tuple[Any, Pending[SourceStream] | None]:
    """For an S3 source: its S3 client and the source being opened in the background; else (None, None)."""
    location = settings.source_location()
    if not location.is_s3:
        return None, None
    client = s3_client(connections=settings.s3_connections)
    opening = Pending(lambda: open_settings_source(settings, client), name="crawljob-open")
    return client, opening
