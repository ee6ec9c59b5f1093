"""The worker's settings: built once from flags and CRAWLJOB_* env vars (flags win), validated here."""

from __future__ import annotations

import argparse
import codecs
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from crawljob_worker.contract import MAX_SHARDS, TERMINATION_LOG
from crawljob_worker.errors import invalid_arguments
from crawljob_worker.uri import Location, parse_location

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("parquet", "csv", "jsonl")
PARQUET_COMPRESSIONS = ("snappy", "zstd", "gzip", "none")
MIB = 1024 * 1024
MAX_CONNECTIONS = 32
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Settings:
    """Everything one worker run needs, already validated."""

    source: str
    output: str
    format: str = "parquet"
    output_compression: str = "snappy"
    string_statistics: bool = False
    delimiter: str = ","
    quote: str | None = '"'
    header: bool = True
    encoding: str = "utf-8"
    compression: str = "auto"
    dtypes: Mapping[str, pa.DataType] = field(default_factory=dict)
    max_reject_ratio: float = 0.01
    version_id: str | None = None
    termination_log: str = TERMINATION_LOG
    chunk_bytes: int = 8 * MIB
    part_bytes: int = 128 * MIB
    retries: int = 8
    s3_connections: int = 1
    s3_range_bytes: int = 8 * MIB
    progress_interval: float = 5.0
    crawljob_name: str | None = None
    namespace: str | None = None
    kube_server: str | None = None
    shards: int = 1
    shard_index: int = 0
    # Which run of the crawl this is (the operator passes `<CrawlJob uid>-<run>`): every shard of one
    # run gets the same id, and only shard reports carrying it count (docs/worker.md, "Shards").
    run_id: str | None = None
    # An S3 source given as two uninterpreted values (what the operator passes): the key is
    # read exactly as given, with any `#`, `?`, `%`, tab or newline in it. `source` is then
    # only the display form `s3://bucket/key`.
    source_bucket: str | None = None
    source_key: str | None = None

    def source_location(self) -> Location:
        """Where to read: the bucket and key as given, else `source` parsed as a URI or path."""
        if self.source_bucket is not None:
            return Location(self.source_key or "", self.source_bucket)
        return parse_location(self.source, what="SOURCE")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so bad flags still get a termination message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise invalid_arguments(f"{message} (see --help)")


def _env(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(f"CRAWLJOB_{name}")
    return value if value not in (None, "") else default


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The `crawljob-worker` flags; each default comes from its CRAWLJOB_* env var."""
    parser = _Parser(
        prog="crawljob-worker",
        description="Stream one CSV object from S3 (or a local file) and convert it to Parquet, CSV "
        "or JSON Lines parts under an output prefix, in bounded memory. Every option also reads "
        "CRAWLJOB_<OPTION> (e.g. CRAWLJOB_MAX_REJECT_RATIO); flags win.",
    )
    e = environ
    parser.add_argument(
        "source", nargs="?", default=_env(e, "SOURCE"), help="s3://bucket/key, a path or file:// URI"
    )
    parser.add_argument(
        "--source-bucket",
        default=_env(e, "SOURCE_BUCKET"),
        help="S3 bucket of the source, with --source-key instead of SOURCE (pass --source-key=KEY)",
    )
    parser.add_argument(
        "--source-key",
        default=_env(e, "SOURCE_KEY"),
        help="S3 key of the source, taken literally: nothing in it is decoded or stripped",
    )
    parser.add_argument(
        "--output", default=_env(e, "OUTPUT"), help="output prefix: s3://bucket/prefix/ or a directory"
    )
    parser.add_argument(
        "--format", default=_env(e, "FORMAT", "parquet"), choices=FORMATS, help="output format"
    )
    parser.add_argument(
        "--output-compression",
        default=_env(e, "OUTPUT_COMPRESSION", "snappy"),
        choices=PARQUET_COMPRESSIONS,
        help="Parquet codec (default snappy); for csv/jsonl, gzip compresses the parts",
    )
    parser.add_argument(
        "--string-statistics",
        action="store_true",
        default=(_env(e, "STRING_STATISTICS", "") or "").lower() in ("1", "true", "yes"),
        help="also write Parquet min/max statistics for text columns (off: ~20%% of Parquet write time; "
        "other columns always have them, and the manifest has every column's min/max)",
    )
    parser.add_argument(
        "--delimiter", default=_env(e, "DELIMITER", ","), help=r"field delimiter, one character (\t for tab)"
    )
    parser.add_argument(
        "--quote", default=_env(e, "QUOTE", '"'), help='quote character (default "); "none" disables quoting'
    )
    parser.add_argument(
        "--no-header",
        action="store_true",
        default=(_env(e, "NO_HEADER", "") or "").lower() in ("1", "true", "yes"),
        help="the first line is data; columns are named column_1 … column_N",
    )
    parser.add_argument(
        "--encoding", default=_env(e, "ENCODING", "utf-8"), help="text encoding (ASCII-compatible)"
    )
    parser.add_argument(
        "--compression",
        default=_env(e, "COMPRESSION", "auto"),
        choices=("auto", "gzip", "none"),
        help="source compression; auto detects gzip by its magic bytes",
    )
    parser.add_argument(
        "--dtypes", default=_env(e, "DTYPES"), help='JSON object of column types, e.g. {"temp": "float64"}'
    )
    parser.add_argument(
        "--max-reject-ratio",
        default=_env(e, "MAX_REJECT_RATIO", "0.01"),
        help="fail above this share of rejected rows",
    )
    parser.add_argument("--version-id", default=_env(e, "VERSION_ID"), help="S3 object version to read")
    parser.add_argument(
        "--termination-log",
        default=_env(e, "TERMINATION_LOG", TERMINATION_LOG),
        help="where the JSON summary is written (Kubernetes terminationMessagePath)",
    )
    parser.add_argument(
        "--chunk-size-mb", default=_env(e, "CHUNK_SIZE_MB", "8"), help="bytes parsed at a time, in MiB"
    )
    parser.add_argument(
        "--part-size-mb",
        default=_env(e, "PART_SIZE_MB", "128"),
        help="target size of each output part, in MiB",
    )
    parser.add_argument(
        "--retries", default=_env(e, "RETRIES", "8"), help="reconnects allowed after transient S3 read errors"
    )
    parser.add_argument(
        "--s3-connections",
        default=_env(e, "S3_CONNECTIONS", "1"),
        help="parallel ranged GETs reading an S3 source (1: one GET stream)",
    )
    parser.add_argument(
        "--s3-range-mb",
        default=_env(e, "S3_RANGE_MB", "8"),
        help="bytes per ranged GET with --s3-connections above 1, in MiB",
    )
    parser.add_argument(
        "--progress-interval",
        default=_env(e, "PROGRESS_INTERVAL", "5"),
        help="seconds between progress reports",
    )
    parser.add_argument(
        "--shards",
        default=_env(e, "SHARDS", "1"),
        help="split the object into this many record-aligned byte ranges, one per worker (see --shard-index)",
    )
    parser.add_argument(
        "--shard-index",
        default=_env(e, "SHARD_INDEX", e.get("JOB_COMPLETION_INDEX") or None),
        help="which shard this worker converts, 0-based (default: $JOB_COMPLETION_INDEX of an Indexed Job; "
        "required with --shards above 1)",
    )
    parser.add_argument(
        "--run-id",
        default=_env(e, "RUN_ID"),
        help="id of this run of the crawl, the same for all its shards and new for every run "
        "(letters, digits, '.', '_', '-'); required with --shards above 1",
    )
    parser.add_argument("--name", default=_env(e, "NAME"), help="CrawlJob whose status.progress is patched")
    parser.add_argument("--namespace", default=_env(e, "NAMESPACE"), help="namespace of the CrawlJob")
    parser.add_argument(
        "--kube-server", default=_env(e, "KUBE_SERVER"), help="API server URL; default: in-cluster"
    )
    return parser


def _connections(text: str) -> int:
    connections = int(_number(text, "--s3-connections", minimum=1, integer=True))
    if connections > MAX_CONNECTIONS:
        raise invalid_arguments(f"--s3-connections is at most {MAX_CONNECTIONS}, got {connections}")
    return connections


def _number(
    text: str, flag: str, *, minimum: float, maximum: float | None = None, integer: bool = False
) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise invalid_arguments(f"{flag} must be a number, got {text!r}") from None
    if value < minimum:
        raise invalid_arguments(f"{flag} must be at least {minimum}, got {text!r}")
    if maximum is not None and value > maximum:
        raise invalid_arguments(f"{flag} must be at most {maximum}, got {text!r}")
    return value


def _delimiter(text: str) -> str:
    text = {"\\t": "\t", "tab": "\t"}.get(text, text)
    if len(text) != 1 or text in "\r\n":
        raise invalid_arguments(f"--delimiter must be one character, got {text!r}")
    return text


def _encoding(text: str) -> str:
    try:
        name = codecs.lookup(text).name
    except LookupError:
        raise invalid_arguments(f"unknown --encoding {text!r}") from None
    if name == "utf-8-sig":
        return "utf-8"
    # Blocks are cut at b"\n" and quotes are counted as bytes: that needs an ASCII-compatible encoding.
    if '\n,;\t|"'.encode(name, errors="replace") != b'\n,;\t|"':
        raise invalid_arguments(
            f"--encoding {text!r} is not ASCII-compatible (e.g. UTF-16); transcode the file first"
        )
    return name


def _run_id(text: str | None, shards: int) -> str | None:
    """`--run-id`, checked: it names objects under the output prefix. A sharded run needs one: its
    shards are separate processes, and only an id given to all of them tells this run's shard reports
    from those an earlier run left under the same prefix."""
    if not text:
        if shards > 1:
            raise invalid_arguments(
                "--run-id is required with --shards above 1: give every shard of one run the same id, "
                "and each new run a new one (e.g. --run-id $(date +%s)); the operator passes "
                "<CrawlJob uid>-<run>"
            )
        return None
    if not RUN_ID.fullmatch(text):
        raise invalid_arguments(
            f"--run-id must be 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit), "
            f"got {text!r}"
        )
    return text


def _dtypes(spec: Mapping[str, str] | None) -> dict[str, pa.DataType]:
    """`--dtypes` as Arrow types. pyarrow (~0.15 s) is imported here only when types are given, so
    that without them the S3 GET is sent before it is imported (see `opening`)."""
    if not spec:
        return {}
    from crawljob_worker.schema import parse_dtypes

    return parse_dtypes(spec)


def settings_from_args(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Parse and validate; raises WorkerError(InvalidArguments) with a one-line reason."""
    args = build_parser(environ).parse_args(list(argv))
    if (args.source_bucket is None) != (args.source_key is None):
        raise invalid_arguments("--source-bucket and --source-key go together")
    if args.source_bucket is not None:
        if args.source:
            raise invalid_arguments("give SOURCE or --source-bucket/--source-key, not both")
        if not args.source_bucket or not args.source_key or "\0" in args.source_key:
            raise invalid_arguments(
                "--source-bucket and --source-key must be non-empty (and the key without NUL)"
            )
        args.source = f"s3://{args.source_bucket}/{args.source_key}"
    if not args.source:
        raise invalid_arguments(
            "SOURCE is required: s3://bucket/key, a path or a file:// URI (or --source-bucket/--source-key)"
        )
    if not args.output:
        raise invalid_arguments("--output is required: s3://bucket/prefix/ or a directory")
    try:
        dtypes_spec = json.loads(args.dtypes) if args.dtypes else {}
    except json.JSONDecodeError as error:
        raise invalid_arguments(f"--dtypes is not valid JSON: {error}") from None
    if not isinstance(dtypes_spec, dict):
        raise invalid_arguments('--dtypes must be a JSON object like {"column": "int64"}')
    ratio = _number(args.max_reject_ratio, "--max-reject-ratio", minimum=0.0)
    if ratio > 1:
        raise invalid_arguments(
            f"--max-reject-ratio is a share between 0 and 1, got {args.max_reject_ratio!r}"
        )
    quote = None if args.quote.lower() == "none" else args.quote
    if quote is not None and (len(quote) != 1 or quote in "\r\n"):
        raise invalid_arguments(f"--quote must be one character or none, got {args.quote!r}")
    delimiter = _delimiter(args.delimiter)
    if quote == delimiter:
        raise invalid_arguments("--quote and --delimiter must differ")
    shards = int(_number(args.shards, "--shards", minimum=1, maximum=MAX_SHARDS, integer=True))
    if args.shard_index is None and shards > 1:
        raise invalid_arguments(
            "--shards above 1 needs the shard's index: --shard-index I, or $JOB_COMPLETION_INDEX "
            "(set by an Indexed Job)"
        )
    shard_index = int(_number(args.shard_index or "0", "--shard-index", minimum=0, integer=True))
    if shard_index >= shards:
        raise invalid_arguments(f"--shard-index must be below --shards ({shards}), got {shard_index}")
    run_id = _run_id(args.run_id, shards)
    return Settings(
        shards=shards,
        shard_index=shard_index,
        run_id=run_id,
        source=args.source,
        output=args.output,
        format=args.format,
        output_compression=args.output_compression,
        string_statistics=args.string_statistics,
        delimiter=delimiter,
        quote=quote,
        header=not args.no_header,
        encoding=_encoding(args.encoding),
        compression=args.compression,
        dtypes=_dtypes(dtypes_spec),
        max_reject_ratio=ratio,
        version_id=args.version_id or None,
        termination_log=args.termination_log,
        chunk_bytes=int(_number(args.chunk_size_mb, "--chunk-size-mb", minimum=0.0) * MIB) or MIB // 16,
        part_bytes=int(_number(args.part_size_mb, "--part-size-mb", minimum=0.0) * MIB) or MIB // 16,
        retries=int(_number(args.retries, "--retries", minimum=0, integer=True)),
        s3_connections=_connections(args.s3_connections),
        s3_range_bytes=int(_number(args.s3_range_mb, "--s3-range-mb", minimum=0.0) * MIB) or MIB // 16,
        progress_interval=_number(args.progress_interval, "--progress-interval", minimum=0.0),
        crawljob_name=args.name or None,
        namespace=args.namespace or None,
        kube_server=args.kube_server or None,
        source_bucket=args.source_bucket,
        source_key=args.source_key,
    )
