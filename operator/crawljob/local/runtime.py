"""Container runtimes of the local kubelet: a local process, or nothing at all (instant).

A runtime runs one container to its end and returns its Outcome; it calls *started* once the
container runs. Cancelling `run` stops the container as a kubelet does (SIGTERM, then SIGKILL
after the grace period). The podman runtime (real images) is in `local/podman.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from crawljob.local.pods import (
    TERMINATION_LOG_ENV,
    ContainerSpec,
    Outcome,
    exit_outcome,
    termination_message,
)

log = logging.getLogger("crawljob.kubelet")

INSTANT_MESSAGE = (
    '{"outcome": "Succeeded", "exitCode": 0, "reason": "Succeeded", "message": "instant mode", '
    '"rowsRead": 0, "rowsWritten": 0, "rowsRejected": 0, "bytesRead": 0, "outputObjects": 0, '
    '"durationSeconds": 0.0}'
)
MAX_GRACE_SECONDS = 10.0  # locally, nobody waits 30 s for a process that ignores SIGTERM


class Runtime(Protocol):
    """Runs one Pod's container to its end (*env*: the container's own, from the Pod).

    It raises ContainerWaiting when the container cannot start yet (the Pod stays Pending).
    """

    mounts_token: bool  # whether it mounts the ServiceAccount token (`directory/serviceaccount`)

    async def run(
        self,
        key: str,
        spec: ContainerSpec,
        env: Mapping[str, str],
        directory: Path,
        started: Callable[[], None],
    ) -> Outcome: ...


class InstantRuntime:
    """Runs nothing: every container succeeds at once with a synthetic result (for benchmarks)."""

    mounts_token = False

    async def run(
        self,
        key: str,
        spec: ContainerSpec,
        env: Mapping[str, str],
        directory: Path,
        started: Callable[[], None],
    ) -> Outcome:
        return Outcome(0, "Completed", INSTANT_MESSAGE)


def resolve_command(argv: list[str], search_path: str) -> list[str]:
    """argv with its first word found on *search_path* (as a container's PATH lookup would)."""
    first = argv[0]
    if os.sep in first:
        return argv
    found = shutil.which(first, path=search_path)
    return [found or first, *argv[1:]]


async def stop_process(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after *grace* seconds (a kubelet's pod stop)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), wait)
            return
        except TimeoutError:
            continue


class ProcessRuntime:
    """Runs the container's command + args as a local process in its own session.

    The process gets *environ* (default: this process's environment) under the container's env.
    *bin_dir* is searched before PATH (the venv's commands, e.g. `crawljob-worker`). The
    termination message file is `CRAWLJOB_TERMINATION_LOG` (the worker's documented option).
    """

    mounts_token = False

    def __init__(self, bin_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.bin_dir = bin_dir
        self.environ = dict(os.environ if environ is None else environ)

    async def run(
        self,
        key: str,
        spec: ContainerSpec,
        env: Mapping[str, str],
        directory: Path,
        started: Callable[[], None],
    ) -> Outcome:
        env = {**self.environ, **env}
        search = os.pathsep.join(
            part for part in (str(self.bin_dir or ""), env.get("PATH", os.defpath)) if part
        )
        argv = resolve_command(spec.argv, search)
        message_file = directory / "termination-log"
        message_file.touch()
        log_path = directory / "output.log"
        with log_path.open("wb") as output:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    env={**env, TERMINATION_LOG_ENV: str(message_file)},
                    cwd=directory,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except (OSError, ValueError) as error:  # ValueError: a NUL in an argument or env value
                # What runc reports for a missing executable: the container never ran.
                return Outcome(128, "StartError", f"cannot start {argv[0]!r}: {error}")
            log.info("pod %s: running %s (pid %s)", key, argv, process.pid)
            started()
            try:
                returncode = await process.wait()
            except asyncio.CancelledError:
                await stop_process(process, min(float(spec.grace_seconds), MAX_GRACE_SECONDS))
                raise
        outcome = exit_outcome(returncode, "")
        message = termination_message(
            message_file.read_text(errors="replace"),
            log_path.read_text(errors="replace"),
            outcome.exit_code,
            spec.message_policy,
        )
        return exit_outcome(returncode, message)
