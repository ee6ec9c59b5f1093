"""`crawljob-worker SOURCE --output URI [options]` (also `crawljob worker`, `python -m crawljob_worker`)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from crawljob_worker.contract import SHARD_KEY, TERMINATION_LOG
from crawljob_worker.counters import Counters
from crawljob_worker.errors import ExitCode, WorkerError
from crawljob_worker.memory import use_jemalloc
from crawljob_worker.opening import start_opening
from crawljob_worker.report import write_termination_message
from crawljob_worker.settings import settings_from_args

log = logging.getLogger("crawljob_worker")


def summary(code: int, reason: str, message: str, counters: Counters, started: float) -> dict[str, Any]:
    """The termination message's content (docs/contracts.md)."""
    return {
        "outcome": "Succeeded" if code == 0 else "Failed",
        "exitCode": code,
        "reason": reason,
        "message": message,
        **counters.as_json(),
        "durationSeconds": round(time.monotonic() - started, 3),
        **({SHARD_KEY: counters.shard} if counters.shard else {}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker; the return value is the process exit code."""
    started = time.monotonic()
    environ = os.environ
    # Before anything imports numpy: its OpenBLAS thread pool only spins (0.07-0.10 CPU-s per run);
    # the worker does no linear algebra.
    environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    logging.basicConfig(
        level=environ.get("CRAWLJOB_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
    args = list(sys.argv[1:] if argv is None else argv)
    termination_log = environ.get("CRAWLJOB_TERMINATION_LOG") or TERMINATION_LOG
    counters = Counters()
    try:
        settings = settings_from_args(args, environ)
        termination_log = settings.termination_log
        if settings.shards > 1:
            use_jemalloc()
            from crawljob_worker.sharded import run_sharded

            run_sharded(settings, environ, counters)
        else:
            client, opening = start_opening(settings)
            use_jemalloc()  # before Arrow allocates anything
            # Imported only now: pandas takes ~0.4 s to import, spent while the S3 GET waits for its answer.
            from crawljob_worker.run import run

            run(settings, environ, counters, client=client, opening=opening)
        code, reason = ExitCode.SUCCEEDED, "Succeeded"
        message = (
            f"{counters.rows_written} rows written to {counters.output_uri} "
            f"in {counters.output_objects} part(s)"
        )
        if counters.rows_rejected:
            message += f"; {counters.rows_rejected} rejected (see {counters.rejects_uri})"
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0) if isinstance(exit_.code, int | None) else 0
    except WorkerError as error:
        code, reason, message = error.code, error.reason, error.message
        if counters.shard:  # a sharded run names its shard, so a failed CrawlJob says which one
            message = f"shard {counters.shard['index']} of {counters.shard['count']}: {message}"
    except KeyboardInterrupt:
        code, reason, message = ExitCode.CRASHED, "Interrupted", "interrupted"
    except Exception as error:  # reported in the termination message, exit 1 (retried)
        log.exception("the worker crashed")
        code, reason, message = ExitCode.CRASHED, "Crashed", f"{type(error).__name__}: {error}"
    result = summary(int(code), reason, message, counters, started)
    write_termination_message(termination_log, result)
    print(json.dumps(result), flush=True)
    if code != ExitCode.SUCCEEDED:
        print(f"crawljob-worker: {reason}: {message}", file=sys.stderr, flush=True)
    return int(code)


def exit_process(code: int) -> None:
    """End the process with *code* once the standard streams and the log are flushed, skipping the
    interpreter's shutdown (0.08-0.14 s of tearing down pandas, pyarrow and their modules).

    By then every output is complete: `main` returns only after the worker's threads are joined
    (writer, uploads, reader, the final progress patch), the parts, rejects and manifest are
    uploaded or renamed into place and the termination message is written and closed. Only for
    the program itself (`crawljob-worker`, `python -m crawljob_worker`): in-process callers of
    `main` keep their interpreter."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):  # a closed or broken pipe must not turn a result into a crash
            stream.flush()
    logging.shutdown()
    os._exit(code)


def console() -> None:
    """The `crawljob-worker` command."""
    exit_process(main())


if __name__ == "__main__":
    console()
