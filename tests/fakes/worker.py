"""A tiny stand-in for crawljob-worker, for the operator's tests (the real worker is tested apart).

It takes the worker's CLI (--source-bucket=B --source-key=K, or SOURCE; --output URI ...) and behaves as the source key's file name says,
as `_`-separated steps: `sleep-<seconds>`, `ok-<rows>`, `exit-<code>`, `garbage` (invalid
termination message), `truncated`, `flaky` (fails once per CrawlJob, then succeeds), `crash`
(exit 1 with no termination message, only a log line), `flakyshard-<i>` (shard i fails once, as a
pod killed mid-way would), `badshard-<i>` (shard i exits 3, BadInput: permanent). Default: `ok-10`.

Sharded (`--shards N`, the index from `--shard-index` or `$JOB_COMPLETION_INDEX`): each shard reports
`"shard": {"index", "count", "finalized"}`; with $FAKE_WORKER_STATE the last shard to finish
finalizes (reporting N times the rows), as the real worker's does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REASONS = {
    2: "InvalidArguments",
    3: "BadInput",
    4: "SourceNotFound",
    5: "RejectThresholdExceeded",
    6: "OutputForbidden",
    75: "Transient",
}


def main(argv: list[str]) -> int:
    keys = [arg.removeprefix("--source-key=") for arg in argv if arg.startswith("--source-key=")]
    source, output = (keys[0] if keys else argv[0]), argv[argv.index("--output") + 1]
    stem = source.rsplit("/", 1)[-1].removesuffix(".gz").removesuffix(".csv")
    log_path = Path(os.environ.get("CRAWLJOB_TERMINATION_LOG", "/dev/termination-log"))
    started = time.monotonic()
    shards = int(argv[argv.index("--shards") + 1]) if "--shards" in argv else 0
    index = argv[argv.index("--shard-index") + 1] if "--shard-index" in argv else None
    index = index if index is not None else os.environ.get("JOB_COMPLETION_INDEX")
    run_name = os.environ.get("CRAWLJOB_NAME", "?") + (f"#{index}" if shards else "")
    state_dir = os.environ.get("FAKE_WORKER_STATE")
    if state_dir:  # one line per run, so tests can count how often each CrawlJob (shard) really ran
        with (Path(state_dir) / "runs.log").open("a") as runs:
            runs.write(run_name + "\n")
        # The process of the latest run, so tests can check that a cancelled run really stopped.
        (Path(state_dir) / f"pid-{os.environ.get('CRAWLJOB_NAME', '?')}").write_text(str(os.getpid()))
    rows = 10
    for step in stem.split("_"):
        verb, _, arg = step.partition("-")
        if verb == "sleep":
            time.sleep(float(arg))
        elif verb == "ok":
            rows = int(arg)
        elif verb == "exit":
            code = int(arg)
            summary = {
                "outcome": "Failed",
                "exitCode": code,
                "reason": REASONS.get(code, "Crashed"),
                "message": f"fake failure {code} for {source}",
                "rowsRead": 0,
            }
            log_path.write_text(json.dumps(summary))
            return code
        elif verb == "garbage":
            log_path.write_text("this is not JSON")
            return 0
        elif verb == "truncated":
            log_path.write_text('{"outcome": "Succeeded", "rowsRead": 12, "rowsWri')
            return 0
        elif verb == "crash":
            print("Traceback (most recent call last): RuntimeError: fake crash", flush=True)
            return 1
        elif verb == "badshard" and index == arg:
            summary = {
                "outcome": "Failed",
                "exitCode": 3,
                "reason": "BadInput",
                "message": f"shard {index} of {shards}: fake bad input for {source}",
                "rowsRead": 0,
            }
            log_path.write_text(json.dumps(summary))
            return 3
        elif verb == "flakyshard" and index == arg:
            marker = (
                Path(os.environ.get("FAKE_WORKER_STATE", "/tmp"))
                / f"flaky-{os.environ['CRAWLJOB_NAME']}-{arg}"
            )
            if not marker.exists():
                marker.write_text("killed once")
                return 137
        elif verb == "flaky":
            marker = (
                Path(os.environ.get("FAKE_WORKER_STATE", "/tmp")) / f"flaky-{os.environ['CRAWLJOB_NAME']}"
            )
            if not marker.exists():
                marker.write_text("failed once")
                print("flaky: failing the first attempt", flush=True)
                return 1
    result: dict[str, Any] = {
        "outcome": "Succeeded",
        "exitCode": 0,
        "reason": "Succeeded",
        "message": "ok",
        "rowsRead": rows,
        "rowsWritten": rows,
        "rowsRejected": 0,
        "bytesRead": rows * 10,
        "outputUri": output,
        "outputObjects": 1,
        "durationSeconds": round(time.monotonic() - started, 3),
    }
    if shards:
        finalized = _last_shard(shards, index)
        result["shard"] = {"index": int(index or 0), "count": shards, "finalized": finalized}
        if finalized:
            for name in ("rowsRead", "rowsWritten", "bytesRead"):
                result[name] = int(result[name]) * shards
    log_path.write_text(json.dumps(result))
    return 0


def _last_shard(shards: int, index: str | None) -> bool:
    """Whether this shard finishes last (all the others' markers exist once its own is written)."""
    state_dir = os.environ.get("FAKE_WORKER_STATE")
    if not state_dir:
        return index == str(shards - 1)
    done = Path(state_dir) / f"shards-done-{os.environ.get('CRAWLJOB_NAME', '?')}"
    done.mkdir(exist_ok=True)
    (done / str(index)).write_text("done")
    return len(list(done.iterdir())) >= shards


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
