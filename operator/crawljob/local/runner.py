"""The local job runner: plays kubelet + Job controller for the emulator (which has no controllers).

For each unsuspended, unfinished Job it creates a Pod (as the Job controller would), runs the
container's command as a local process with the container's env, then writes the Pod's terminated
state with the termination message and the Job's status (retries up to backoffLimit, honouring
podFailurePolicy FailJob exit codes and activeDeadlineSeconds). Jobs deleted while running are
killed, and their Pods deleted (playing the garbage collector too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import secrets
import shutil
import signal
import string
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from crawljob import kube

log = logging.getLogger("crawljob.runner")

Body = dict[str, Any]

INSTANT_MESSAGE = (
    '{"outcome": "Succeeded", "exitCode": 0, "reason": "Succeeded", "message": "instant mode", '
    '"rowsRead": 0, "rowsWritten": 0, "rowsRejected": 0, "bytesRead": 0, "outputObjects": 0, '
    '"durationSeconds": 0.0}'
)
MAX_MESSAGE_BYTES = 4096
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_finished(job: Mapping[str, Any]) -> bool:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return True
    return False


def _failjob_codes(job: Mapping[str, Any]) -> set[int]:
    codes: set[int] = set()
    rules = ((job.get("spec") or {}).get("podFailurePolicy") or {}).get("rules") or []
    for rule in rules:
        on_exit = rule.get("onExitCodes") or {}
        if rule.get("action") == "FailJob" and on_exit.get("operator", "In") == "In":
            codes.update(int(value) for value in on_exit.get("values") or [])
    return codes


def pod_log_path(log_dir: Path, namespace: str, pod_name: str, container: str) -> Path:
    """Where the runner keeps a container's output and the emulator reads it for `pods/NAME/log`."""
    return log_dir / namespace / pod_name / f"{container}.log"


class JobRunner:
    """Run the emulator's Jobs as local processes; `await run()` until cancelled."""

    def __init__(
        self,
        client: kube.KubeClient,
        namespace: str | None,
        extra_env: Mapping[str, str],
        bin_dir: Path | None = None,
        mode: Literal["process", "instant"] = "process",
        max_parallel: int = 4,
        inherit_env: bool = True,
        relist_seconds: float = 2.0,
        log_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.extra_env = dict(extra_env)
        self.bin_dir = bin_dir or Path(sys.executable).parent
        self.mode = mode
        self.inherit_env = inherit_env
        self.relist_seconds = relist_seconds
        # Where each container's output is kept (pod_log_path), as a kubelet keeps it for
        # `kubectl logs`; the emulator serves it from there. None: output only goes to the log.
        self.log_dir = log_dir
        self._slots = asyncio.Semaphore(max_parallel)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # by Job uid
        self._done: set[str] = set()

    async def run(self) -> None:
        """Watch Jobs (with a periodic re-list as a safety net) and run each once."""
        watcher = asyncio.create_task(self._watch_forever())
        try:
            while True:
                try:
                    for job in await self.client.list(kube.JOBS, self.namespace):
                        self._consider(job)
                    self._forget_finished()
                except kube.KubeError as exc:
                    log.warning("job runner: listing Jobs failed: %s", exc)
                await asyncio.sleep(self.relist_seconds)
        finally:
            watcher.cancel()
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(watcher, *tasks, return_exceptions=True)

    async def _watch_forever(self) -> None:
        while True:
            try:
                async for event in self.client.watch(kube.JOBS, self.namespace):
                    job = event.get("object") or {}
                    if event.get("type") == "DELETED":
                        self._cancel((job.get("metadata") or {}).get("uid"))
                    else:
                        self._consider(job)
            except kube.KubeError as exc:
                log.debug("job runner: watch ended: %s", exc)
            await asyncio.sleep(0.5)

    def _consider(self, job: Body) -> None:
        uid = (job.get("metadata") or {}).get("uid")
        if not uid or uid in self._tasks or uid in self._done:
            return
        if (job.get("spec") or {}).get("suspend") or _is_finished(job):
            return
        self._tasks[uid] = asyncio.create_task(self._run_job(job), name=f"job-{job['metadata']['name']}")

    def _cancel(self, uid: str | None) -> None:
        task = self._tasks.get(uid or "")
        if task is not None:
            task.cancel()

    def _forget_finished(self) -> None:
        """Move finished runs out of the task table (their Jobs are never run again)."""
        for uid, task in list(self._tasks.items()):
            if task.done():
                self._tasks.pop(uid, None)
                self._done.add(uid)

    async def _run_job(self, job: Body) -> None:
        metadata = job["metadata"]
        name, namespace, uid = metadata["name"], metadata.get("namespace") or "default", metadata["uid"]
        pods: list[str] = []
        try:
            async with self._slots:
                await self._execute(job, name, namespace, uid, pods)
        except asyncio.CancelledError:
            # The Job was deleted (or the runner stops): play the garbage collector for its pods.
            await asyncio.shield(self._delete_pods(namespace, pods))
            raise
        except kube.NotFound:
            log.info("job runner: Job %s disappeared while running", name)
            await self._delete_pods(namespace, pods)
        except Exception:
            log.exception("job runner: running Job %s failed", name)
        finally:
            self._done.add(uid)
            self._tasks.pop(uid, None)

    async def _delete_pods(self, namespace: str, pods: list[str]) -> None:
        for pod in pods:
            with contextlib.suppress(kube.KubeError):
                await self.client.delete(kube.PODS, namespace, pod)

    async def _execute(self, job: Body, name: str, namespace: str, uid: str, pods: list[str]) -> None:
        spec = job.get("spec") or {}
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        failjob = _failjob_codes(job)
        status = dict(job.get("status") or {})
        failed = int(status.get("failed") or 0)
        start_time = status.get("startTime") or _now()
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            remaining = None if not deadline else float(deadline) - (loop.time() - started)
            if remaining is not None and remaining <= 0:
                await self._finish_job(
                    namespace,
                    name,
                    failed,
                    0,
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    start_time,
                )
                return
            pod_name = f"{name}-{''.join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))}"
            pods.append(pod_name)
            await self._create_pod(job, pod_name, namespace, uid)
            await self.client.patch(
                kube.JOBS,
                namespace,
                name,
                {"status": {"active": 1, "startTime": start_time, "failed": failed or None, "ready": 0}},
                "status",
            )
            outcome = await self._run_pod(job, pod_name, namespace, remaining)
            exit_code, reason = outcome
            if reason == "DeadlineExceeded":
                failed += 1
                await self._finish_job(
                    namespace,
                    name,
                    failed,
                    0,
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    start_time,
                )
                return
            if exit_code == 0:
                await self._finish_job(namespace, name, failed, 1, "Complete", "", "", start_time)
                return
            failed += 1
            if exit_code in failjob:
                await self._finish_job(
                    namespace,
                    name,
                    failed,
                    0,
                    "Failed",
                    "PodFailurePolicy",
                    f"Container worker for pod {namespace}/{pod_name} failed with exit code {exit_code} "
                    "matching FailJob rule at index 0",
                    start_time,
                )
                return
            if failed > backoff_limit:
                await self._finish_job(
                    namespace,
                    name,
                    failed,
                    0,
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    start_time,
                )
                return
            await self.client.patch(
                kube.JOBS, namespace, name, {"status": {"failed": failed, "active": 0}}, "status"
            )

    async def _create_pod(self, job: Body, pod_name: str, namespace: str, uid: str) -> None:
        template = (job.get("spec") or {}).get("template") or {}
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        job_name = job["metadata"]["name"]
        labels.update(
            {
                "job-name": job_name,
                "batch.kubernetes.io/job-name": job_name,
                "controller-uid": uid,
                "batch.kubernetes.io/controller-uid": uid,
            }
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec") or {},
            "status": {"phase": "Pending"},
        }
        await self.client.create(kube.PODS, namespace, pod)

    async def _patch_pod(self, namespace: str, pod_name: str, status: Body) -> None:
        await self.client.patch(kube.PODS, namespace, pod_name, {"status": status})

    async def _run_pod(
        self, job: Body, pod_name: str, namespace: str, timeout: float | None
    ) -> tuple[int, str]:
        """Run the pod's container; (exit code, reason) with reason "DeadlineExceeded" on timeout."""
        started_at = _now()
        container = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "containers", [{}]
        )[0]
        if self.mode == "instant":
            await self._patch_pod(
                namespace, pod_name, self._terminated(container, 0, "Completed", INSTANT_MESSAGE, started_at)
            )
            return 0, "Completed"
        with tempfile.TemporaryDirectory(prefix="crawljob-pod-") as scratch:
            log_path = Path(scratch) / "termination-log"
            command = self._command(container)
            env = self._env(container, log_path)
            try:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    env=env,
                    cwd=scratch,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                message = f"failed to start container command {command[0]!r}: {exc}"
                await self._patch_pod(
                    namespace,
                    pod_name,
                    {
                        "phase": "Pending",
                        "containerStatuses": [
                            {
                                "name": container.get("name", "worker"),
                                "ready": False,
                                "restartCount": 0,
                                "image": container.get("image", ""),
                                "state": {"waiting": {"reason": "CreateContainerError", "message": message}},
                            }
                        ],
                    },
                )
                # Like a kubelet, keep it pending; the Job fails only through its deadline if any.
                await asyncio.sleep(timeout if timeout is not None else 3600 * 24)
                return 1, "DeadlineExceeded"
            await self._patch_pod(
                namespace,
                pod_name,
                {
                    "phase": "Running",
                    "startTime": started_at,
                    "containerStatuses": [
                        {
                            "name": container.get("name", "worker"),
                            "ready": True,
                            "restartCount": 0,
                            "image": container.get("image", ""),
                            "state": {"running": {"startedAt": started_at}},
                        }
                    ],
                },
            )
            keep = (
                pod_log_path(self.log_dir, namespace, pod_name, container.get("name", "worker"))
                if self.log_dir
                else None
            )
            output_task = asyncio.create_task(self._drain(process, pod_name, keep))
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                self._kill(process)
                await process.wait()
                await output_task
                await self._patch_pod(
                    namespace,
                    pod_name,
                    {
                        **self._terminated(container, 137, "Error", "", started_at),
                        "phase": "Failed",
                        "reason": "DeadlineExceeded",
                        "message": "Pod was active on the node longer than the specified deadline",
                    },
                )
                return 137, "DeadlineExceeded"
            except asyncio.CancelledError:
                self._kill(process)
                with contextlib.suppress(Exception):
                    await asyncio.shield(process.wait())
                output_task.cancel()
                raise
            tail = await output_task
            exit_code = process.returncode if process.returncode is not None else 1
            if exit_code < 0:  # killed by a signal, as a container runtime reports it
                exit_code = 128 - exit_code
            message = (
                log_path.read_bytes()[:MAX_MESSAGE_BYTES].decode("utf-8", "replace")
                if log_path.exists()
                else ""
            )
            if not message.strip() and exit_code != 0:
                message = tail  # terminationMessagePolicy: FallbackToLogsOnError
            reason = "Completed" if exit_code == 0 else "Error"
            await self._patch_pod(
                namespace, pod_name, self._terminated(container, exit_code, reason, message, started_at)
            )
            return exit_code, reason

    @staticmethod
    def _kill(process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    @staticmethod
    async def _drain(process: asyncio.subprocess.Process, pod_name: str, keep: Path | None = None) -> str:
        """Forward the process output to the log (and to *keep*, the pod's log file); return the last
        lines (for FallbackToLogsOnError)."""
        lines: list[str] = []
        assert process.stdout is not None
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(keep.open("ab")) if keep is not None else None
            async for raw in process.stdout:
                if sink is not None:
                    sink.write(raw)
                    sink.flush()
                line = raw.decode("utf-8", "replace").rstrip()
                log.debug("[%s] %s", pod_name, line)
                lines.append(line)
                del lines[:-80]
        return "\n".join(lines)[-2048:]

    def _terminated(
        self, container: Mapping[str, Any], exit_code: int, reason: str, message: str, started_at: str
    ) -> Body:
        state: Body = {"exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": _now()}
        if message:
            state["message"] = message
        return {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": container.get("name", "worker"),
                    "ready": False,
                    "restartCount": 0,
                    "image": container.get("image", ""),
                    "state": {"terminated": state},
                }
            ],
        }

    def _command(self, container: Mapping[str, Any]) -> list[str]:
        command = [str(part) for part in (container.get("command") or [])] + [
            str(part) for part in (container.get("args") or [])
        ]
        if not command:
            raise ValueError("container has no command")
        first = command[0]
        if not Path(first).is_absolute():
            local = self.bin_dir / first
            command[0] = str(local) if local.exists() else (shutil.which(first) or first)
        return command

    def _env(self, container: Mapping[str, Any], log_path: Path) -> dict[str, str]:
        env = dict(os.environ) if self.inherit_env else {}
        for item in container.get("env") or []:
            if "value" in item and item.get("name"):
                env[str(item["name"])] = str(item["value"])
        env.update(self.extra_env)
        env["CRAWLJOB_TERMINATION_LOG"] = str(log_path)
        return env

    async def _finish_job(
        self,
        namespace: str,
        name: str,
        failed: int,
        succeeded: int,
        condition: str,
        reason: str,
        message: str,
        start_time: str,
    ) -> None:
        now = _now()
        cond: Body = {"type": condition, "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        conditions = [cond]
        if condition == "Complete":
            conditions.insert(
                0,
                {
                    "type": "SuccessCriteriaMet",
                    "status": "True",
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                    "reason": "CompletionsReached",
                },
            )
        status: Body = {
            "active": 0,
            "failed": failed or None,
            "succeeded": succeeded or None,
            "ready": 0,
            "startTime": start_time,
            "conditions": conditions,
        }
        if condition == "Complete":
            status["completionTime"] = now
        await self.client.patch(kube.JOBS, namespace, name, {"status": status}, "status")
