"""A tiny stand-in for crawljob-worker, for the operator's tests (the real worker is tested apart).

It takes the worker's CLI (--source-bucket=B --source-key=K, or SOURCE; --output URI ...) and behaves as the source key's file name says,
as `_`-separated steps: `sleep-<seconds>`, `ok-<rows>`, `exit-<code>`, `garbage` (invalid
termination message), `truncated`, `flaky` (fails once per CrawlJob, then succeeds), `crash`
(exit 1 with no termination message, only a log line), `flakyshard-<i>` (the pod of index i of an
Indexed Job fails once, as a pod killed mid-way would). Default: `ok-10`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

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
    state_dir = os.environ.get("FAKE_WORKER_STATE")
    if state_dir:  # one line per run, so tests can count how often each CrawlJob really ran
        with (Path(state_dir) / "runs.log").open("a") as runs:
            runs.write(os.environ.get("CRAWLJOB_NAME", "?") + "\n")
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
        elif verb == "flakyshard" and os.environ.get("JOB_COMPLETION_INDEX") == arg:
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
    summary = {
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
    log_path.write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
