"""One worker run: source → blocks → parser → parts, rejects, manifest. The I/O edges meet here."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Generator, Mapping
from contextlib import closing, suppress
from typing import Any

import pyarrow as pa

from crawljob_worker import __version__
from crawljob_worker.blocks import Block, iter_blocks
from crawljob_worker.counters import Counters
from crawljob_worker.errors import ExitCode, WorkerError
from crawljob_worker.kubeapi import kube_target
from crawljob_worker.mapped import mapped_blocks
from crawljob_worker.opening import SourceStream, open_settings_source
from crawljob_worker.parse import BlockParser, Dialect
from crawljob_worker.pipeline import Drain, Pending, prefetch
from crawljob_worker.report import Progress, StatusSink
from crawljob_worker.settings import Settings
from crawljob_worker.sink import (
    MANIFEST_NAME,
    REJECTS_NAME,
    LocalTarget,
    PartInfo,
    PartsWriter,
    RejectsWriter,
    S3Target,
    Target,
    manifest_bytes,
    remove_stale,
    remove_stale_shards,
)
from crawljob_worker.source import FileStream, SourceInfo, decompressed, s3_client
from crawljob_worker.stats import TableStats
from crawljob_worker.uri import parse_location

log = logging.getLogger("crawljob_worker")


def _iso(timestamp: float) -> str:
    return (
        datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def reject_threshold_error(
    rejected: int, read: int, ratio: float, rejects_uri: str | None
) -> WorkerError | None:
    """The RejectThresholdExceeded error when the share of rejected rows is above *ratio* (pure)."""
    if not rejected or rejected / max(read, 1) <= ratio:
        return None
    return WorkerError(
        ExitCode.REJECT_THRESHOLD_EXCEEDED,
        "RejectThresholdExceeded",
        f"{rejected} of {read} rows rejected ({rejected / max(read, 1):.2%}), above maxRejectRatio "
        f"{ratio:.2%}; the rejected rows with line numbers and reasons are in {rejects_uri}",
    )


def build_manifest(
    *,
    settings: Settings,
    source: SourceInfo,
    compression: str,
    schema: list[dict[str, str]],
    counters: Counters,
    stats: TableStats,
    parts: list[PartInfo],
    outcome: str,
    started: float,
    finished: float,
    reconnects: int,
) -> dict[str, Any]:
    """The `_manifest.json` document (pure)."""
    return {
        "manifestVersion": 1,
        "outcome": outcome,
        "runId": settings.run_id,
        "source": {
            "uri": source.uri,
            "size": source.size,
            "eTag": source.etag,
            "versionId": source.version_id,
            "compression": compression,
            "encoding": settings.encoding,
            "delimiter": settings.delimiter,
            "header": settings.header,
        },
        "output": {
            "uri": counters.output_uri,
            "format": settings.format,
            "compression": settings.output_compression,
        },
        "schema": schema,
        "rowsRead": counters.rows_read,
        "rowsWritten": counters.rows_written,
        "rowsRejected": counters.rows_rejected,
        "bytesRead": counters.bytes_read,
        "columns": stats.as_json(),
        "parts": [part.as_json() for part in parts],
        "rejects": {"uri": counters.rejects_uri, "rows": counters.rows_rejected}
        if counters.rejects_uri
        else None,
        "resumes": reconnects,
        "startedAt": _iso(started),
        "finishedAt": _iso(finished),
        "durationSeconds": round(finished - started, 3),
        "worker": {"version": __version__},
    }


def run(
    settings: Settings,
    environ: Mapping[str, str],
    counters: Counters,
    client: Any = None,
    opening: Pending[SourceStream] | None = None,
    status: StatusSink | None = None,
) -> None:
    """Convert the source; fills *counters*; raises WorkerError on failure (after writing rejects).

    *opening* is the source already being opened in the background (`opening.start_opening`);
    *status* receives progress instead of the CrawlJob named in *settings* (a shard's, `sharded`)."""
    started = time.time()
    source_location = settings.source_location()
    output_location = parse_location(settings.output, what="--output")
    if client is None and (source_location.is_s3 or output_location.is_s3):
        client = s3_client(connections=settings.s3_connections)
    target: Target = (
        S3Target(client, output_location) if output_location.is_s3 else LocalTarget(output_location.path)
    )
    counters.output_uri = target.uri_of("")
    try:
        target.names()  # fail fast (exit 6) on a missing or unreadable output bucket, before reading
    except BaseException:
        if opening is not None:
            with suppress(Exception):
                opening.result().close()
        raise
    stream = opening.result() if opening is not None else open_settings_source(settings, client)
    progress = Progress(
        stream.info.size,
        settings.progress_interval,
        kube_target(settings.crawljob_name, settings.namespace, settings.kube_server, environ),
        sink=status,
    )
    log.info(
        "reading %s (%s bytes) into %s as %s",
        stream.info.uri,
        stream.info.size,
        counters.output_uri,
        settings.format,
    )
    dialect = Dialect(settings.delimiter, settings.quote, settings.encoding, settings.header)
    parser = BlockParser(dialect, settings.dtypes)
    parts = PartsWriter(
        target, settings.format, settings.output_compression, settings.part_bytes, settings.string_statistics
    )
    rejects = RejectsWriter(None)
    writer: Drain[pa.Table] | None = None
    try:
        text, compression = decompressed(stream, source_location.path, settings.compression)

        blocks: Generator[Block, None, None]
        if isinstance(stream, FileStream) and compression == "none" and stream.info.size:
            # Parsed in place from the page cache, pages released block by block (mapped.py).
            blocks = mapped_blocks(stream, settings.chunk_bytes, dialect.quote_bytes)
        else:
            blocks = iter_blocks(text, settings.chunk_bytes, dialect.quote_bytes)
        if source_location.is_s3:
            # Network reads wait on the socket, not the CPU: a reader thread overlaps them with parsing.
            # For local files a reader thread measured no faster on 2 shared cores.
            blocks = prefetch(blocks)
        # Parquet encoding (one thread, GIL released) overlaps parsing the next block.
        writer = Drain(parts.write)
        with closing(blocks):
            for block in blocks:
                parsed = parser.parse(block)
                writer.put(parsed.table)
                if parsed.rejects:
                    rejects.add(parsed.rejects)
                counters.rows_read += parsed.rows_read
                counters.bytes_read = stream.offset
                progress.update(stream.offset, counters.rows_read)
        writer.close()
        counters.rows_written = parts.rows
        counters.rows_rejected = rejects.count
        if parts.rows == 0 and parser.names:
            parts.write_empty(parser.empty_table().schema)
        written_parts = parts.close()
        counters.bytes_read = stream.offset
        counters.output_objects = len(written_parts)
        written = {part.name for part in written_parts} | {MANIFEST_NAME}
        rejects.close()
        if rejects.count:
            target.put_file(rejects.path, REJECTS_NAME)
            written.add(REJECTS_NAME)
            counters.rejects_uri = target.uri_of(REJECTS_NAME)
        else:
            rejects.discard()
        remove_stale(target, written)
        if settings.shards == 1:  # the whole object (not a shard's sub-prefix): an earlier sharded run's
            remove_stale_shards(target, 0)  # shard-NNNNN/ prefixes are stale too
        failure = reject_threshold_error(
            counters.rows_rejected, counters.rows_read, settings.max_reject_ratio, counters.rejects_uri
        )
        schema = [{"name": f.name, "type": str(f.type)} for f in (parser.schema or [])]
        manifest = build_manifest(
            settings=settings,
            source=stream.info,
            compression=compression,
            schema=schema,
            counters=counters,
            stats=parts.stats,
            parts=written_parts,
            outcome="Failed" if failure else "Succeeded",
            started=started,
            finished=time.time(),
            reconnects=stream.reconnects,
        )
        target.put_bytes(manifest_bytes(manifest), MANIFEST_NAME)
        counters.manifest_uri = target.uri_of(MANIFEST_NAME)
    except BaseException:
        if writer is not None:
            writer.abort()
        parts.abort()
        rejects.discard()
        raise
    finally:
        stream.close()
        parts.cleanup()
    progress.update(counters.bytes_read, counters.rows_read, final=True)
    if failure is not None:
        raise failure
