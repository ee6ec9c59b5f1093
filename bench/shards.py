"""`make bench-shards`: one CSV through 1, 2 and 4 shards (worker processes at once), from S3.

The same generated CSV (SIZE_MB, 1600 by default) is converted by one worker (`--shards 1`, the
contender: today's path) and by N workers `--shards N --shard-index i` started together, as an
Indexed Job's pods would be. Each S3 connection goes through the proxy of `bench/s3_ranges.py` capped
at each of THROTTLES MB/s (real S3 gives one GET stream ~50-100 MB/s; 0 = unthrottled, CPU-bound on
these 2 shared cores). Wall time, speedup over 1 shard, total CPU-seconds of all worker processes
(wait4 of a driver that waits for every worker), and an order-independent checksum of the output
rows (the sum of pandas' per-row hashes, mod 2^64: equal for equal multisets of rows, i.e. for equal
sorted rows), which must match the 1-shard run's.

Two loopback S3 servers (SERVERS): s3rver (npm; objects are files, a ranged GET streams its range:
S3's cost model) and moto (reads the whole object into memory for every GET, ranged or not: ~1 s of
its CPU per GET of a 1.6 GB object, which N shards pay N times over on the same 2 cores).
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from s3_ranges import throttled  # bench/: this script's directory is on sys.path
from worker import MB, bench_client, generate, loopback_s3, measure

from crawljob.local.s3 import free_port

ROOT = Path(__file__).resolve().parent.parent

DRIVER = """
import json, subprocess, sys
commands = json.loads(sys.argv[1])
if sys.argv[2] == "together":
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for command in commands]
    codes = [process.wait() for process in processes]
else:  # one after another: no shard competes with another for the cores
    codes = [subprocess.run(command, stdout=subprocess.DEVNULL).returncode for command in commands]
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


@contextlib.contextmanager
def loopback_s3rver(source: Path, workdir: Path) -> Iterator[dict[str, str]]:
    """s3rver on loopback holding the file as s3://bench/iot.csv (installed by tools/s3rver.sh)."""
    program = subprocess.run(
        [str(ROOT / "tools" / "s3rver.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    port = free_port()
    data = workdir / "s3rver-data"
    data.mkdir()
    server = subprocess.Popen(
        [program, "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "-s", "--configure-bucket", "bench"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(endpoint + "/bench", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"s3rver did not start on {endpoint}") from None
                time.sleep(0.2)
        env = {**os.environ, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "S3RVER",
               "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        bench_client(env).upload_file(str(source), "bench", "iot.csv")
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_case(
    env: dict[str, str], workdir: Path, output: Path, shards: int, mode: str = "together"
) -> tuple[float, float, int, str, str]:
    """(wall s, CPU s, rows, checksum, failure note) of N shard processes started together (or run
    one after another: *mode* "sequential")."""
    commands = [
        [sys.executable, "-m", "crawljob_worker", "s3://bench/iot.csv", "--output", str(output),
         "--termination-log", str(workdir / f"t-{index}"), "--shards", str(shards), "--shard-index", str(index),
         "--run-id", f"bench-{output.name}"]
        for index in range(shards)
    ]  # fmt: skip
    result = measure(f"{shards}", [sys.executable, "-c", DRIVER, json.dumps(commands), mode], env=env)
    count, digest = checksum(output) if not result.note else (0, 0)
    shutil.rmtree(output, ignore_errors=True)
    return result.seconds, result.cpu_seconds, count, f"{digest:016x}", result.note


def startup_cpu(env: dict[str, str], workdir: Path) -> float:
    """Median CPU-seconds of one worker process converting a header-only CSV object from the same S3
    (its fixed cost: interpreter, imports, S3 client, the output's first write)."""
    bench_client(env).put_object(Bucket="bench", Key="empty.csv", Body=b"ts,device_id,value\n")
    command = [sys.executable, "-m", "crawljob_worker", "s3://bench/empty.csv", "--output",
               str(workdir / "out-empty"), "--termination-log", str(workdir / "t-empty")]  # fmt: skip
    runs = sorted(measure("startup", command, env=env).cpu_seconds for _ in range(3))
    return runs[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=int(os.environ.get("SIZE_MB", "1600")))
    parser.add_argument("--throttles", default=os.environ.get("THROTTLES", "20,40,0"),
                        help="MB/s per connection, comma-separated; 0 = unthrottled")  # fmt: skip
    parser.add_argument("--shards", default=os.environ.get("SHARDS", "1,2,4"))
    parser.add_argument("--servers", default=os.environ.get("SERVERS", "s3rver,moto"))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("REPEAT", "3")),
                        help="runs of the CPU cost measurement (shards one after another); 0 skips it")  # fmt: skip
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="crawljob-bench-shards-"))
    source = workdir / "iot.csv"
    size = generate(source, args.size_mb)
    counts = [int(item) for item in args.shards.split(",")]
    rows: list[tuple[str, str, int, float, float, int, str, str]] = []
    startup: float | None = None
    costs: list[tuple[int, float, str]] = []
    for server in args.servers.split(","):
        opened = loopback_s3rver(source, workdir) if server == "s3rver" else loopback_s3(source)
        with opened as environment:
            if startup is None:  # the CPU cost, once, on the first server, shards one after another
                startup = startup_cpu(environment, workdir)
                for shards in counts if args.repeat else []:
                    output = workdir / f"out-sequential-{shards}"
                    runs = [
                        run_case(environment, workdir, output, shards, "sequential")
                        for _ in range(args.repeat)
                    ]
                    costs.append(
                        (shards, statistics.median(run[1] for run in runs), max(run[4] for run in runs))
                    )
                    print(costs[-1], flush=True)
            for throttle in [float(item) for item in args.throttles.split(",")]:
                case = f"{throttle:g} MB/s" if throttle else "unthrottled"
                context = (
                    throttled(environment, throttle * MB) if throttle else contextlib.nullcontext(environment)
                )
                with context as env:
                    for shards in counts:
                        output = workdir / f"out-{server}-{throttle:g}-{shards}"
                        rows.append((server, case, shards, *run_case(env, workdir, output, shards)))
                        print(rows[-1], flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{size / MB:,.0f} MB CSV from loopback S3 through a proxy capping each connection (or not); "
          f"{os.cpu_count()} cores, shared by the workers, the S3 server and the proxy")  # fmt: skip
    print(f"one worker process's fixed cost (start-up, imports, an empty CSV object): {startup or 0:.2f} CPU-s; "
          "'less start-ups' is the extra CPU once N-1 of those are taken off")  # fmt: skip
    print("| S3 server | per connection | shards | wall s | speedup | CPU s | CPU vs 1 shard | less start-ups "
          "| rows | row checksum | same rows |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    first = rows[0]
    for server, case, shards, seconds, cpu, count, digest, note in rows:
        base = next(row for row in rows if row[:2] == (server, case) and row[2] == counts[0])
        same = "yes" if (count, digest) == (first[5], first[6]) and not note else f"NO {note}"
        net = (cpu - (shards - base[2]) * (startup or 0)) / base[4] - 1
        print(f"| {server} | {case} | {shards} | {seconds:.1f} | {base[3] / seconds:.2f}x | {cpu:.1f} | "
              f"{cpu / base[4] - 1:+.1%} | {net:+.1%} | {count:,} | {digest} | {same} |")  # fmt: skip
    if costs:
        print(f"\nCPU cost of sharding on {args.servers.split(',')[0]}, unthrottled, the N shards run one after "
              f"another (no competition for the cores; median of {args.repeat} runs)")  # fmt: skip
        print("| shards | CPU s | vs 1 shard | less start-ups |")
        print("|---:|---:|---:|---:|")
        for shards, cpu, note in costs:
            alone = costs[0][1]
            net = (cpu - (shards - costs[0][0]) * (startup or 0)) / alone - 1
            print(
                f"| {shards}{' ' + note if note else ''} | {cpu:.2f} | {cpu / alone - 1:+.1%} | {net:+.1%} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
