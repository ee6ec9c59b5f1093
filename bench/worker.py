"""`make bench-worker`: the worker against the physical limit and reference converters, a table per size.

For each size (SIZE_MB, a comma list, default 400,800,1600: 411, 802 and 1,604 MB files) generates
an IoT-style CSV, then on that same file measures, each in its own child process: `cat` to
/dev/null, the worker from the local file, the worker from a loopback S3 (moto), pandas
`read_csv(chunksize=…)` → pyarrow ParquetWriter, DuckDB COPY → Parquet and polars
`scan_csv().sink_parquet()`. Rounds interleave the contenders, so load from other processes hits
all alike; each figure is the median over the rounds. Columns: wall time, MB/s, CPU time (user +
system; on shared cores the steadier measure of work, and what a cluster bills), MB per CPU-second,
the child's own peak RSS (wait4, the highest of the rounds), and wall and CPU time each divided by
the worker's (local file). polars and duckdb are benchmark-only dependencies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

MB = 1_000_000
CONTENDERS = ["cat", "worker (local file)", "worker (loopback S3)", "pandas chunked → ParquetWriter",
              "DuckDB COPY → Parquet", "polars sink_parquet"]  # fmt: skip


def generate(path: Path, size_mb: int, seed: int = 7) -> int:
    """An IoT-style CSV: timestamp, device id, categories, floats, a quoted string with commas."""
    rng = np.random.default_rng(seed)
    rows_per_block = 200_000
    start = np.datetime64("2024-05-01T00:00:00.000")
    written = 0
    block_index = 0
    with path.open("wb") as handle:
        while written < size_mb * MB:
            n = rows_per_block
            offsets = (np.arange(n) + block_index * n) * 37
            ids = rng.integers(0, 50_000, n)
            table = pa.table(
                {
                    "ts": pa.array((start + offsets.astype("timedelta64[ms]")).astype("datetime64[ms]")),
                    "device_id": pa.array(np.char.add("dev-", ids.astype(str))),
                    "site": pa.array(np.array(["north", "south", "east", "west", "lab"])[ids % 5]),
                    "kind": pa.array(np.array(["thermo", "hygro", "baro", "co2"])[ids % 4]),
                    "temperature": pa.array(np.round(rng.normal(21, 4, n), 3)),
                    "humidity": pa.array(np.round(rng.uniform(20, 90, n), 2)),
                    "pressure": pa.array(np.round(rng.normal(1013, 8, n), 1)),
                    "battery": pa.array(rng.integers(0, 101, n)),
                    "note": pa.array(np.char.add("reading ok, sensor ", (ids % 977).astype(str))),
                }
            )
            options = pacsv.WriteOptions(include_header=block_index == 0, quoting_style="needed")
            sink = pa.BufferOutputStream()
            pacsv.write_csv(table, sink, write_options=options)
            data = sink.getvalue().to_pybytes()
            handle.write(data)
            written += len(data)
            block_index += 1
    return written


@dataclass
class Result:
    name: str
    seconds: float
    peak_rss_mb: float
    note: str = ""
    cpu_seconds: float = 0.0


# A small exec'd process that forks the contender, so the contender's peak RSS (wait4) is its own and
# not inflated by the pages of the big benchmark process it would otherwise be forked from.
MEASURE = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"seconds": time.perf_counter() - started, "rss": usage.ru_maxrss / 1024,
                  "cpu": usage.ru_utime + usage.ru_stime,
                  "code": os.waitstatus_to_exitcode(status)}))
"""


def measure(name: str, command: list[str], env: dict[str, str] | None = None) -> Result:
    """Run *command* as a child; its wall time and its own peak RSS."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", MEASURE, *command], env=env, capture_output=True, text=True, check=False
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    note = f"failed ({found['code']}): {done.stderr.strip()[-200:]}" if found["code"] else ""
    return Result(name, found["seconds"], found["rss"], note, found["cpu"])


PANDAS = """
import sys, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
writer = None
for chunk in pd.read_csv(sys.argv[1], chunksize=500_000):
    table = pa.Table.from_pandas(chunk, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(sys.argv[2], table.schema)
    writer.write_table(table.cast(writer.schema))
writer.close()
"""
DUCKDB = """
import sys, duckdb
duckdb.sql(f"COPY (SELECT * FROM read_csv('{sys.argv[1]}')) TO '{sys.argv[2]}' (FORMAT parquet)")
"""
POLARS = """
import sys, polars as pl
pl.scan_csv(sys.argv[1]).sink_parquet(sys.argv[2])
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--size-mb",
        default=os.environ.get("SIZE_MB") or "400,800,1600",
        help="file sizes to run, comma-separated (MB): one table each",
    )
    parser.add_argument(
        "--workdir", default=os.environ.get("BENCH_DIR"), help="where the file and outputs go"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files (iot-SIZE.csv)")
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("REPEAT") or "3"), help="rounds")
    parser.add_argument(
        "--skip",
        default="",
        help="comma list to skip: s3,pandas,duckdb,polars, parse (the parse-stage comparison)",
    )
    args = parser.parse_args()
    skip = {item.strip() for item in args.skip.split(",") if item.strip()}
    sizes = [int(item) for item in str(args.size_mb).split(",") if item.strip()]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="crawljob-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for index, size_mb in enumerate(sizes):
            # The parse-stage line once, on the first size: it is per block, not per file.
            print(
                run_size(workdir, size_mb, args.repeat, skip if index == 0 else skip | {"parse"}), flush=True
            )
            if not args.keep:
                (workdir / f"iot-{size_mb}.csv").unlink(missing_ok=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_size(workdir: Path, size_mb: int, repeat: int, skip: set[str]) -> str:
    """Generate a *size_mb* file and measure every contender on it, *repeat* interleaved rounds."""
    source = workdir / f"iot-{size_mb}.csv"
    started = time.perf_counter()
    size = generate(source, size_mb)
    print(
        f"generated {source} ({size / MB:,.0f} MB) in {time.perf_counter() - started:.1f}s", file=sys.stderr
    )
    python = sys.executable
    worker = [python, "-m", "crawljob_worker"]
    local_worker = [
        *worker,
        str(source),
        "--output",
        str(workdir / "out-local"),
        "--termination-log",
        str(workdir / "t"),
    ]
    references = {
        "pandas": ("pandas chunked → ParquetWriter", PANDAS, "pandas.parquet"),
        "duckdb": ("DuckDB COPY → Parquet", DUCKDB, "duckdb.parquet"),
        "polars": ("polars sink_parquet", POLARS, "polars.parquet"),
    }
    s3_worker = [
        *worker,
        "s3://bench/iot.csv",
        "--output",
        str(workdir / "out-s3"),
        "--termination-log",
        str(workdir / "t"),
    ]
    runs: dict[str, list[Result]] = {}
    loads = [os.getloadavg()[0]]
    with contextlib.ExitStack() as stack:
        s3_env = stack.enter_context(loopback_s3(source)) if "s3" not in skip else None
        measure("warm page cache", ["cat", str(source)])
        for _ in range(repeat):  # rounds interleave the contenders, so load drifts hit all alike
            round_results = [
                measure("cat", ["cat", str(source)]),
                measure("worker (local file)", local_worker),
            ]
            if s3_env is not None:
                round_results.append(measure("worker (loopback S3)", s3_worker, env=s3_env))
            for key, (name, script, output) in references.items():
                if key not in skip:
                    round_results.append(
                        measure(name, [python, "-c", script, str(source), str(workdir / output)])
                    )
            for result in round_results:
                runs.setdefault(result.name, []).append(result)
            loads.append(os.getloadavg()[0])
        stage = "" if "parse" in skip else parse_stage(source)
    results = [median(name, attempts) for name, attempts in runs.items()]
    heading = (
        f"\n{repeat} round(s), median of each; load average (1 min) {min(loads):.1f}-{max(loads):.1f} "
        f"during the run on {os.cpu_count()} cores"
    )
    return "\n".join([heading, table(results, size), stage])


def parse_stage(source: Path, chunk_bytes: int = 8 << 20) -> str:
    """What parsing through pandas costs: the worker's fast path (`pandas.read_csv(engine="pyarrow")`
    → `pa.Table.from_pandas`) against calling `pyarrow.csv.read_csv` directly, on the same blocks,
    alternating per block so load drifts hit both alike (in this process; no writing)."""
    from crawljob_worker.blocks import iter_blocks
    from crawljob_worker.parse import BlockParser, Dialect

    parser = BlockParser(Dialect())
    pandas_seconds = direct_seconds = 0.0
    rows = 0
    with source.open("rb") as handle:
        for index, block in enumerate(iter_blocks(handle, chunk_bytes, b'"')):
            if parser.schema is None:
                parser.parse(block)  # the header and the schema; not timed
                continue
            newlines = block.newlines if block.newlines is not None else block.data.count(b"\n")
            for which in ("pandas", "direct") if index % 2 else ("direct", "pandas"):
                started = time.perf_counter()
                if which == "pandas":
                    parsed = parser._fast(block.data, newlines)
                    assert parsed is not None
                    rows += parsed.num_rows
                else:
                    pacsv.read_csv(
                        pa.py_buffer(block.data),
                        read_options=pacsv.ReadOptions(column_names=parser.names, block_size=1 << 20),
                        parse_options=pacsv.ParseOptions(newlines_in_values=True),
                        convert_options=pacsv.ConvertOptions(
                            column_types=dict(zip(parser.schema.names, parser.schema.types, strict=True)),
                            strings_can_be_null=False,
                        ),
                    )
                elapsed = time.perf_counter() - started
                if which == "pandas":
                    pandas_seconds += elapsed
                else:
                    direct_seconds += elapsed
    return (
        f"\nparse stage only ({rows:,} rows after the first block, 8 MiB blocks): "
        f"pandas.read_csv(engine=pyarrow) + from_pandas {pandas_seconds:.2f} s, "
        f"pyarrow.csv.read_csv directly {direct_seconds:.2f} s: pandas costs "
        f"{pandas_seconds / direct_seconds - 1:+.0%}"
    )


def bench_client(env: dict[str, str]) -> Any:
    """A boto3 S3 client for the loopback server *env* names (AWS_ENDPOINT_URL_S3 and its keys)."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip


@contextlib.contextmanager
def loopback_s3(source: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server on loopback holding the file as s3://bench/iot.csv (upload not timed)."""
    from crawljob.local.s3 import run_local_s3

    with run_local_s3() as s3:
        env = {**os.environ, **s3.environment()}
        client = bench_client(env)
        client.create_bucket(Bucket="bench")
        client.upload_file(str(source), "bench", "iot.csv")
        yield env


def median(name: str, attempts: list[Result]) -> Result:
    """The median wall and CPU time of the successful attempts, the highest peak RSS of all."""
    good = [attempt for attempt in attempts if not attempt.note] or attempts
    return Result(
        name,
        statistics.median(attempt.seconds for attempt in good),
        max(attempt.peak_rss_mb for attempt in attempts),
        good[0].note,
        statistics.median(attempt.cpu_seconds for attempt in good),
    )


def table(results: list[Result], size: int) -> str:
    worker = next((r for r in results if r.name == "worker (local file)" and not r.note), None)
    lines = [
        f"| contender ({size / MB:,.0f} MB CSV) | wall s | MB/s | CPU s | MB per CPU-s | peak RSS MB "
        "| time ÷ worker | CPU ÷ worker |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        time_ratio = f"{result.seconds / worker.seconds:.2f}" if worker else "-"
        cpu_ratio = f"{result.cpu_seconds / worker.cpu_seconds:.2f}" if worker and worker.cpu_seconds else "-"
        per_cpu = f"{size / MB / result.cpu_seconds:,.0f}" if result.cpu_seconds else "-"
        note = f" {result.note}" if result.note else ""
        row = [
            f"{result.name}{note}",
            f"{result.seconds:.2f}",
            f"{size / MB / result.seconds:,.0f}",
            f"{result.cpu_seconds:.2f}",
            per_cpu,
            f"{result.peak_rss_mb:,.0f}",
            time_ratio,
            cpu_ratio,
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
