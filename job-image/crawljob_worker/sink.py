"""Outputs: data parts of bounded size, the rejects object and `_manifest.json`, on S3 or a local dir.

Parts are written to a local temporary file and uploaded with boto3's transfer manager (multipart
above its threshold) in a background thread while the next part is being produced. Names are
deterministic (`part-00000.parquet`, …), and objects of an earlier run that this run did not write
are deleted before the manifest, so a re-run leaves exactly one consistent set.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import shutil
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from crawljob_worker.errors import WorkerError, output_forbidden, transient
from crawljob_worker.parse import Reject
from crawljob_worker.source import error_code, network_errors
from crawljob_worker.stats import TableStats
from crawljob_worker.uri import Location

log = logging.getLogger("crawljob_worker.sink")

MANIFEST_NAME = "_manifest.json"
REJECTS_NAME = "_rejects.csv"
# Objects the worker writes (a sharded run's finalize claims too), and a sharded run's sub-prefixes.
OWNED_NAME = re.compile(
    r"^(part-\d{5}\.(parquet|csv|jsonl)(\.gz)?|_rejects\.csv|_manifest\.json|_finalize-[A-Za-z0-9._-]+\.json)$"
)
SHARD_PREFIX = re.compile(r"^shard-(\d{5})/$")
MIB = 1024 * 1024
FORBIDDEN_OUTPUT_CODES = {"AccessDenied", "NoSuchBucket", "AllAccessDisabled", "InvalidAccessKeyId"}
TRANSFER = {"multipart_threshold": 16 * MIB, "multipart_chunksize": 16 * MIB, "max_concurrency": 4}


@dataclass(frozen=True)
class PartInfo:
    name: str
    uri: str
    rows: int
    bytes: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.uri,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


def output_error(error: BaseException, uri: str) -> WorkerError:
    """A failed write as OutputForbidden (permanent) or Transient."""
    # Without S3 in the run botocore and boto3 were never imported, so nothing raised their errors;
    # looking for them must not import them either.
    if "botocore.exceptions" in sys.modules:
        from botocore.exceptions import ClientError

        if isinstance(error, ClientError):
            code = error_code(error)
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in FORBIDDEN_OUTPUT_CODES or status in (403, 404):
                return output_forbidden(
                    f"cannot write {uri}: {code}; check the output URI and the worker's permissions"
                )
            return transient(f"writing {uri} failed: {code}")
    if isinstance(error, PermissionError | IsADirectoryError | NotADirectoryError | FileExistsError):
        return output_forbidden(f"cannot write {uri}: {error}")
    if "boto3.exceptions" in sys.modules and isinstance(error, boto3_upload_failed()):
        cause = error.__cause__ or error.__context__
        if cause is not None and cause is not error:
            return output_error(cause, uri)
        return transient(f"uploading {uri} failed: {error}")
    return transient(f"writing {uri} failed: {error}")


def read_object(client: Any, location: Location) -> bytes | None:
    """The object (or local file) at *location*, or None if it does not exist; other failures as
    `output_error` (the output prefix's own documents: shard reports, manifests, claims)."""
    if not location.is_s3:
        try:
            return Path(location.path).read_bytes()
        except FileNotFoundError:
            return None
    try:
        return bytes(client.get_object(Bucket=location.bucket, Key=location.path)["Body"].read())
    except client_error() as error:
        if error_code(error) in ("NoSuchKey", "404"):
            return None
        raise output_error(error, location.uri()) from error
    except network_errors() as error:
        raise output_error(error, location.uri()) from error


def client_error() -> type[Exception]:
    from botocore.exceptions import ClientError

    client: type[Exception] = ClientError
    return client


def boto3_upload_failed() -> type[Exception]:
    # Imported here: boto3 is imported only when S3 is used.
    from boto3.exceptions import S3UploadFailedError

    failed: type[Exception] = S3UploadFailedError
    return failed


class Target(Protocol):
    def uri_of(self, name: str) -> str: ...
    def put_file(self, path: str, name: str) -> None: ...
    def put_bytes(self, data: bytes, name: str) -> None: ...
    def names(self) -> set[str]: ...
    def delete(self, names: set[str]) -> None: ...
    def prefixes(self) -> set[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def scratch_dir(self) -> str | None: ...


class S3Target:
    """An S3 prefix."""

    def __init__(self, client: Any, location: Location) -> None:
        self._client = client
        self._location = (
            location
            if not location.path or location.path.endswith("/")
            else Location(location.path + "/", location.bucket)
        )

    def uri_of(self, name: str) -> str:
        return self._location.child(name).uri()

    def _key(self, name: str) -> str:
        return self._location.child(name).path

    def put_file(self, path: str, name: str) -> None:
        try:
            from boto3.s3.transfer import S3Transfer, TransferConfig

            # What boto3's `client.upload_file` does, for a client made by botocore (source.s3_client).
            with S3Transfer(self._client, TransferConfig(**TRANSFER)) as transfer:
                transfer.upload_file(path, self._location.bucket, self._key(name))
        except (client_error(), boto3_upload_failed(), *network_errors()) as error:
            raise output_error(error, self.uri_of(name)) from error

    def put_bytes(self, data: bytes, name: str) -> None:
        try:
            self._client.put_object(Bucket=self._location.bucket, Key=self._key(name), Body=data)
        except (client_error(), *network_errors()) as error:
            raise output_error(error, self.uri_of(name)) from error

    def names(self) -> set[str]:
        found: set[str] = set()
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._location.bucket, Prefix=self._location.path, Delimiter="/"
            )
            for page in pages:
                found.update(item["Key"][len(self._location.path) :] for item in page.get("Contents", []))
        except (client_error(), *network_errors()) as error:
            raise output_error(error, self._location.uri()) from error
        return found

    def delete(self, names: set[str]) -> None:
        ordered = sorted(names)
        for start in range(0, len(ordered), 1000):
            batch = [{"Key": self._key(name)} for name in ordered[start : start + 1000]]
            try:
                self._client.delete_objects(
                    Bucket=self._location.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (client_error(), *network_errors()) as error:
                raise output_error(error, self._location.uri()) from error

    def prefixes(self) -> set[str]:
        """The sub-prefixes directly under the prefix (`shard-00000/`, …)."""
        found: set[str] = set()
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._location.bucket, Prefix=self._location.path, Delimiter="/"
            )
            for page in pages:
                found.update(
                    item["Prefix"][len(self._location.path) :] for item in page.get("CommonPrefixes", [])
                )
        except (client_error(), *network_errors()) as error:
            raise output_error(error, self._location.uri()) from error
        return found

    def delete_prefix(self, prefix: str) -> None:
        """Delete the objects directly under the sub-prefix *prefix* (a shard's are all there)."""
        child = S3Target(self._client, self._location.child(prefix))
        child.delete(child.names())

    def scratch_dir(self) -> str | None:
        return None


class LocalTarget:
    """A local directory (created if needed); files appear atomically by rename."""

    def __init__(self, directory: str) -> None:
        self._directory = Path(directory).resolve()
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise output_error(error, str(self._directory)) from error

    def uri_of(self, name: str) -> str:
        return str(self._directory / name) if name else str(self._directory) + "/"

    def put_file(self, path: str, name: str) -> None:
        try:
            shutil.move(path, self.uri_of(name))
        except OSError as error:
            raise output_error(error, self.uri_of(name)) from error

    def put_bytes(self, data: bytes, name: str) -> None:
        final = self.uri_of(name)
        try:
            with tempfile.NamedTemporaryFile(dir=self._directory, prefix=".tmp-", delete=False) as handle:
                handle.write(data)
            Path(handle.name).chmod(0o644)
            Path(handle.name).replace(final)
        except OSError as error:
            raise output_error(error, final) from error

    def names(self) -> set[str]:
        return {path.name for path in self._directory.iterdir()}

    def delete(self, names: set[str]) -> None:
        for name in names:
            with suppress(FileNotFoundError):
                (self._directory / name).unlink()

    def prefixes(self) -> set[str]:
        return {f"{path.name}/" for path in self._directory.iterdir() if path.is_dir()}

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._directory / prefix, ignore_errors=True)

    def scratch_dir(self) -> str | None:
        return str(self._directory)


def part_extension(output_format: str, compression: str) -> str:
    if output_format == "parquet":
        return "parquet"
    return f"{output_format}.gz" if compression == "gzip" else output_format


class _PartFile:
    """One data part being written to a local file."""

    def __init__(
        self,
        path: str,
        output_format: str,
        compression: str,
        schema: pa.Schema,
        string_statistics: bool,
        dictionary: list[str] | None = None,
    ) -> None:
        self.path = path
        self.rows = 0
        self._format = output_format
        self._native = pa.OSFile(path, "wb")
        self._stream: IO[bytes] | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        if output_format == "parquet":
            self._parquet = pq.ParquetWriter(
                self._native,
                schema,
                compression=compression,
                **parquet_encodings(schema, string_statistics, dictionary),
            )
        else:
            stream: Any = (
                pa.CompressedOutputStream(self._native, "gzip") if compression == "gzip" else self._native
            )
            self._stream = stream
            if output_format == "csv":
                self._csv = pacsv.CSVWriter(stream, schema)

    def write(self, table: pa.Table) -> None:
        if self._parquet is not None:
            self._parquet.write_table(table, row_group_size=max(1, table.num_rows))
        elif self._csv is not None:
            self._csv.write_table(table)
        else:
            frame = table.to_pandas(types_mapper=_arrow_dtype)
            text = frame.to_json(orient="records", lines=True, date_format="iso", force_ascii=False)
            if text and self._stream is not None:
                self._stream.write((text if text.endswith("\n") else text + "\n").encode("utf-8"))
        self.rows += table.num_rows

    def size(self) -> int:
        return int(self._native.tell())

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self._csv is not None:
            self._csv.close()
        if self._stream is not None and self._stream is not self._native:
            self._stream.close()
        if not self._native.closed:
            self._native.close()


# Dictionary encoding pays when values repeat; above this share of distinct values in the first
# block, building the dictionary costs more write time than it saves space.
MAX_DICTIONARY_SHARE = 0.25
# Below this many rows the first block says little about a column's cardinality: all keep the
# dictionary, as Parquet writers do by default.
MIN_ROWS_TO_DECIDE = 1000


def dictionary_columns(table: pa.Table) -> list[str] | None:
    """The columns of *table* (a run's first block) worth dictionary-encoding: those whose distinct
    values are at most MAX_DICTIONARY_SHARE of its rows, timestamps never; None when *table* is too
    small to tell (then every column but the timestamps keeps the dictionary) (pure).

    On the benchmark file `device_id` (48% distinct) took 0.32 of the writer's 1.18 CPU-s per
    400 MB in dictionary building that Parquet then mostly could not use."""
    if table.num_rows < MIN_ROWS_TO_DECIDE:
        return None
    return [
        field.name
        for field, column in zip(table.schema, table.columns, strict=True)
        if not pa.types.is_timestamp(field.type)
        and pc.count_distinct(column, mode="all").as_py() <= MAX_DICTIONARY_SHARE * table.num_rows
    ]


def parquet_encodings(
    schema: pa.Schema, string_statistics: bool = False, dictionary: list[str] | None = None
) -> dict[str, Any]:
    """ParquetWriter options for *schema*; *dictionary* names the columns to dictionary-encode
    (`dictionary_columns`; None: all but timestamps).

    Timestamps are delta-encoded instead of dictionary-encoded: they are nearly all distinct, so the
    dictionary is built only to be dropped, while deltas of ordered times pack small (on the
    benchmark file: Parquet written ~15% faster and 40% smaller). Row-group min/max statistics are written for every column except text columns unless
    *string_statistics*: comparing every string cost ~22% of the Parquet write time on the benchmark
    file, and per-row-group string ranges of time-ordered exports rarely prune anything (the
    manifest has each column's min/max and null count for the whole file either way)."""
    timestamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    texts = {f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)}
    with_statistics = [f.name for f in schema if string_statistics or f.name not in texts]
    options: dict[str, Any] = {"write_statistics": with_statistics or False}
    if dictionary is not None:
        options["use_dictionary"] = [name for name in dictionary if name not in timestamps] or False
    elif timestamps:
        options["use_dictionary"] = [f.name for f in schema if f.name not in timestamps]
    if timestamps:
        options["column_encoding"] = dict.fromkeys(timestamps, "DELTA_BINARY_PACKED")
    return options


def _arrow_dtype(kind: pa.DataType) -> Any:
    import pandas as pd

    return pd.ArrowDtype(kind)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


class PartsWriter:
    """Writes tables into parts of about *part_bytes* and uploads each as it is finished."""

    def __init__(
        self,
        target: Target,
        output_format: str,
        compression: str,
        part_bytes: int,
        string_statistics: bool = False,
    ) -> None:
        self._target = target
        self._string_statistics = string_statistics
        self._format = output_format
        self._compression = compression
        self._part_bytes = part_bytes
        self._scratch = tempfile.mkdtemp(prefix=".crawljob-", dir=target.scratch_dir())
        self._current: _PartFile | None = None
        self._uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crawljob-upload")
        self._pending: Future[PartInfo] | None = None
        self.parts: list[PartInfo] = []
        self.stats = TableStats()
        self.rows = 0
        # Decided from the first table and kept for the whole run, so every part is encoded alike.
        self._dictionary: list[str] | None = None
        self._dictionary_decided = False

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if not self._dictionary_decided and self._format == "parquet":
            self._dictionary = dictionary_columns(table)
            self._dictionary_decided = True
        if self._current is None:
            index = len(self.parts) + (self._pending is not None)
            name = f"part-{index:05d}.{part_extension(self._format, self._compression)}"
            self._current = _PartFile(
                str(Path(self._scratch) / name),
                self._format,
                self._compression,
                table.schema,
                self._string_statistics,
                self._dictionary,
            )
        self._current.write(table)
        if self._format != "parquet":
            self.stats.add(table, text_min_max=self._string_statistics)
        elif not self._string_statistics:  # text columns get no Parquet statistics: count nulls here
            texts = [
                f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            ]
            self.stats.add_nulls(table, texts)
        self.rows += table.num_rows
        if self._current.size() >= self._part_bytes:
            self._finish_part()

    def write_empty(self, schema: pa.Schema) -> None:
        """One empty part, so that a header-only file still yields its schema."""
        name = f"part-00000.{part_extension(self._format, self._compression)}"
        self._current = _PartFile(
            str(Path(self._scratch) / name), self._format, self._compression, schema, self._string_statistics
        )
        self._current.write(schema.empty_table())
        self._finish_part()

    def _finish_part(self) -> None:
        part, self._current = self._current, None
        assert part is not None
        part.close()
        if self._format == "parquet":
            self.stats.add_parquet(pq.read_metadata(part.path))
        self._collect()
        self._pending = self._uploads.submit(self._upload, part.path, part.rows)

    def _upload(self, path: str, rows: int) -> PartInfo:
        name = Path(path).name
        size = Path(path).stat().st_size
        digest = sha256_of(path)
        self._target.put_file(path, name)
        Path(path).unlink(missing_ok=True)
        return PartInfo(name=name, uri=self._target.uri_of(name), rows=rows, bytes=size, sha256=digest)

    def _collect(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.parts.append(pending.result())

    def close(self) -> list[PartInfo]:
        """Finish the last part and wait for every upload."""
        if self._current is not None:
            self._finish_part()
        self._collect()
        return self.parts

    def abort(self) -> None:
        if self._current is not None:
            try:
                self._current.close()
            except Exception:  # cleaning up after a failure already being reported
                log.debug("closing the unfinished part failed", exc_info=True)
            self._current = None
        self._uploads.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._scratch, ignore_errors=True)

    def cleanup(self) -> None:
        self._uploads.shutdown(wait=True)
        shutil.rmtree(self._scratch, ignore_errors=True)


class RejectsWriter:
    """Rejected records, spilled to a temporary CSV (line, reason, record) as they come."""

    def __init__(self, directory: str | None) -> None:
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            "w",
            encoding="utf-8",
            newline="",
            prefix=".crawljob-rejects-",
            suffix=".csv",
            dir=directory,
            delete=False,
        )
        self._writer = csv.writer(self._file)
        self._writer.writerow(["line", "reason", "record"])
        self.count = 0
        self.path = self._file.name

    def add(self, rejects: list[Reject]) -> None:
        for reject in rejects:
            self._writer.writerow([reject.line, reject.reason, reject.record])
        self.count += len(rejects)

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        self._file.close()
        Path(self.path).unlink(missing_ok=True)


def remove_stale(target: Target, written: set[str]) -> set[str]:
    """Delete outputs of an earlier run that this run did not write (only names the worker owns)."""
    stale = {name for name in target.names() if OWNED_NAME.match(name) and name not in written}
    if stale:
        target.delete(stale)
    return stale


def remove_stale_shards(target: Target, shards: int) -> set[str]:
    """Delete the `shard-NNNNN/` sub-prefixes of an earlier sharded run with index *shards* or more
    (all of them for a 1-shard run)."""
    stale = {
        prefix
        for prefix in target.prefixes()
        if (found := SHARD_PREFIX.match(prefix)) and int(found.group(1)) >= shards
    }
    for prefix in sorted(stale):
        target.delete_prefix(prefix)
    return stale


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")
