"""Opening an S3 source before the heavy imports, so that the GET's wait overlaps them.

An S3 GET spends a while before its first byte: tens of milliseconds on S3 (plus the TLS handshake),
and on a loopback moto server about 0.5 s per 800 MB, because moto reads the whole object before it
answers. The worker needs ~0.4 s of CPU to import pandas before it can parse anything. So `__main__`
starts the GET in a thread first and imports `run` (pandas) while it waits. This module imports
neither pandas nor the parser.
"""

from __future__ import annotations

from typing import Any

from crawljob_worker.pipeline import Pending
from crawljob_worker.settings import Settings
from crawljob_worker.source import SourceStream, open_settings_source, s3_client
from crawljob_worker.uri import parse_location


def start_opening(settings: Settings) -> tuple[Any, Pending[SourceStream] | None]:
    """For an S3 source: its S3 client and the source being opened in the background; else (None, None)."""
    location = parse_location(settings.source, what="SOURCE")
    if not location.is_s3:
        return None, None
    client = s3_client(connections=settings.s3_connections)
    opening = Pending(lambda: open_settings_source(settings, client), name="crawljob-open")
    return client, opening
