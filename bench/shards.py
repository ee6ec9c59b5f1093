"""`make bench-shards`: one CSV through 1, 2 and 4 shards (worker processes at once), from S3.

The same generated CSV (SIZE_MB, 1600 by default) on moto's loopback S3 is converted by one worker
(`--shards 1`, the contender: today's path) and by N workers `--shards N --shard-index i` started
together, as an Indexed Job's pods would be. First with every S3 connection capped at THROTTLE MB/s
by the proxy of `bench/s3_ranges.py` (real S3 gives one GET stream ~50-100 MB/s: the I/O-bound case),
then unthrottled (CPU-bound on these 2 shared cores). Wall time, speedup over 1 shard, total
CPU-seconds of all processes (wait4 of a driver that waits for every worker), and an order-independent
checksum of the output rows (the sum of pandas' per-row hashes, mod 2^64: equal for equal multisets
of rows, i.e. for equal sorted rows), which must match the 1-shard run's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from s3_ranges import throttled  # bench/: this script's directory is on sys.path
from worker import MB, generate, loopback_s3, measure

DRIVER = """
import json, subprocess, sys
commands = json.loads(sys.argv[1])
processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for command in commands]
codes = [process.wait() for process in processes]
sys.exit(max(codes))
"""


def checksum(output: Path) -> tuple[int, int]:
    """(rows, sum of per-row hashes mod 2^64) of the parts the top manifest lists."""
    manifest = json.loads((output / "_manifest.json").read_text())
    total, rows = 0, 0
    for part in manifest["parts"]:
        frame = pq.read_table(part["uri"]).to_pandas()
        rows += len(frame)
        total = (total + int(pd.util.hash_pandas_object(frame, index=False).sum())) % 2**64
    return rows, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=int(os.environ.get("SIZE_MB", "1600")))
    parser.add_argument("--throttle", type=float, default=float(os.environ.get("THROTTLE", "40")),
                        help="MB/s per connection")  # fmt: skip
    parser.add_argument("--shards", default=os.environ.get("SHARDS", "1,2,4"))
    parser.add_argument("--cases", default=os.environ.get("CASES", "throttled,unthrottled"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="crawljob-bench-shards-"))
    source = workdir / "iot.csv"
    size = generate(source, args.size_mb)
    counts = [int(item) for item in args.shards.split(",")]
    rows: list[tuple[str, int, float, float, int, str, str]] = []
    with loopback_s3(source) as environment:
        for case in args.cases.split(","):
            context = throttled(environment, args.throttle * MB) if case == "throttled" else None
            env = context.__enter__() if context is not None else environment
            try:
                for shards in counts:
                    output = workdir / f"out-{case}-{shards}"
                    commands = [
                        (
                            [
                                sys.executable,
                                "-m",
                                "crawljob_worker",
                                "s3://bench/iot.csv",
                                "--output",
                                str(output),
                                "--termination-log",
                                str(workdir / f"t-{index}"),
                                "--shards",
                                str(shards),
                                "--shard-index",
                                str(index),
                                "--run-id",
                                f"bench-{case}-{shards}",
                            ]
                        )
                        for index in range(shards)
                    ]
                    result = measure(
                        f"{shards}", [sys.executable, "-c", DRIVER, json.dumps(commands)], env=env
                    )
                    count, digest = checksum(output) if not result.note else (0, 0)
                    rows.append((case, shards, result.seconds, result.cpu_seconds, count, f"{digest:016x}",
                                 result.note))  # fmt: skip
                    shutil.rmtree(output, ignore_errors=True)
                    print(rows[-1], flush=True)
            finally:
                if context is not None:
                    context.__exit__(None, None, None)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{size / MB:,.0f} MB CSV from moto on loopback; throttled: each connection capped at "
          f"{args.throttle:g} MB/s; {os.cpu_count()} cores, shared")  # fmt: skip
    print("| case | shards | wall s | speedup | CPU s | CPU vs 1 shard | rows | row checksum | same rows |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for case, shards, seconds, cpu, count, digest, note in rows:
        base = next(row for row in rows if row[0] == case and row[1] == counts[0])
        same = "yes" if (count, digest) == (base[4], base[5]) and not note else f"NO {note}"
        print(f"| {case} | {shards} | {seconds:.1f} | {base[2] / seconds:.2f}x | {cpu:.1f} | "
              f"{cpu / base[3] - 1:+.1%} | {count:,} | {digest} | {same} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
