"""The emulator's Job controller, paired with the local kubelet: `JobRunner` (the emulator has no controllers).

For each unsuspended, unfinished Job it creates a Pod (as the Job controller would: labels, owner
reference, `<job>-<5 chars>`), lets the local kubelet (`local/kubelet.py`, the same one the real
control-plane tier uses) run it, and writes the Job's status from how the Pod ended: retries up
to backoffLimit (without the exponential delay), podFailurePolicy FailJob exit codes,
activeDeadlineSeconds (the Pod is deleted, so the kubelet stops it). A Job deleted while running
has its Pods deleted (playing the garbage collector too).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import secrets
import string
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from crawljob import kube
from crawljob.local import pods
from crawljob.local.kubelet import LocalKubelet
from crawljob.local.pods import Outcome, pod_log_path
from crawljob.local.runtime import InstantRuntime, ProcessRuntime

__all__ = ["JobController", "JobRunner", "pod_log_path"]

log = logging.getLogger("crawljob.runner")

Body = dict[str, Any]
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def is_finished(job: Mapping[str, Any]) -> bool:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return True
    return False


def failjob_codes(job: Mapping[str, Any]) -> set[int]:
    codes: set[int] = set()
    rules = ((job.get("spec") or {}).get("podFailurePolicy") or {}).get("rules") or []
    for rule in rules:
        on_exit = rule.get("onExitCodes") or {}
        if rule.get("action") == "FailJob" and on_exit.get("operator", "In") == "In":
            codes.update(int(value) for value in on_exit.get("values") or [])
    return codes


def pod_for(job: Mapping[str, Any], pod_name: str) -> Body:
    """The Pod the Job controller makes from the Job's template."""
    template = (job.get("spec") or {}).get("template") or {}
    metadata = job["metadata"]
    job_name, uid = metadata["name"], metadata["uid"]
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.update(
        {
            "job-name": job_name,
            "batch.kubernetes.io/job-name": job_name,
            "controller-uid": uid,
            "batch.kubernetes.io/controller-uid": uid,
        }
    )
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": metadata.get("namespace") or "default",
            "labels": labels,
            "ownerReferences": [{**owner, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": template.get("spec") or {},
        "status": {"phase": "Pending"},
    }


def finished_status(
    failed: int, succeeded: int, condition: str, reason: str, message: str, start_time: str
) -> Body:
    """The Job status the Job controller writes when it reaches a verdict."""
    stamp = pods.now()
    verdict: Body = {"type": condition, "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp}
    if reason:
        verdict["reason"] = reason
    if message:
        verdict["message"] = message
    conditions = [verdict]
    if condition == "Complete":
        met = {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"}
        conditions.insert(0, {**met, "lastProbeTime": stamp, "lastTransitionTime": stamp})
    status: Body = {
        "active": 0,
        "failed": failed or None,
        "succeeded": succeeded or None,
        "ready": 0,
        "startTime": start_time,
        "conditions": conditions,
    }
    if condition == "Complete":
        status["completionTime"] = stamp
    return status


class JobController:
    """Create each Job's Pods and write its status from how they end (the emulator's Job controller)."""

    def __init__(self, client: kube.KubeClient, namespace: str | None, relist_seconds: float = 2.0) -> None:
        self.client = client
        self.namespace = namespace
        self.relist_seconds = relist_seconds
        self._jobs: dict[str, asyncio.Task[None]] = {}  # running, by Job uid
        self._done: set[str] = set()
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}  # by namespace/pod

    @property
    def active_jobs(self) -> int:
        """How many Jobs are being run right now."""
        return sum(1 for task in self._jobs.values() if not task.done())

    def pod_finished(self, namespace: str, name: str, outcome: Outcome) -> None:
        """The kubelet's report of a container's end (its Pod status already written)."""
        future = self._waiting.pop(f"{namespace}/{name}", None)
        if future is not None and not future.done():
            future.set_result(outcome)

    async def run(self) -> None:
        """Watch Jobs (with a periodic re-list as a safety net) and run each once."""
        watcher = asyncio.create_task(self._watch_forever())
        try:
            while True:
                try:
                    for job in await self.client.list(kube.JOBS, self.namespace):
                        self._consider(job)
                except kube.KubeError as exc:
                    log.warning("job controller: listing Jobs failed: %s", exc)
                await asyncio.sleep(self.relist_seconds)
        finally:
            watcher.cancel()
            tasks = list(self._jobs.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(watcher, *tasks, return_exceptions=True)

    async def _watch_forever(self) -> None:
        while True:
            try:
                async for event in self.client.watch(kube.JOBS, self.namespace):
                    job = event.get("object") or {}
                    if event.get("type") == "DELETED":
                        task = self._jobs.get((job.get("metadata") or {}).get("uid") or "")
                        if task is not None:
                            task.cancel()
                    else:
                        self._consider(job)
            except kube.KubeError as exc:
                log.debug("job controller: watch ended: %s", exc)
            await asyncio.sleep(0.5)

    def _consider(self, job: Body) -> None:
        uid = (job.get("metadata") or {}).get("uid")
        if not uid or uid in self._jobs or uid in self._done:
            return
        if (job.get("spec") or {}).get("suspend") or is_finished(job):
            return
        self._jobs[uid] = asyncio.create_task(self._run_job(job), name=f"job-{job['metadata']['name']}")

    async def _run_job(self, job: Body) -> None:
        metadata = job["metadata"]
        name, namespace, uid = metadata["name"], metadata.get("namespace") or "default", metadata["uid"]
        made: list[str] = []
        try:
            await self._execute(job, name, namespace, made)
        except asyncio.CancelledError:
            # The Job was deleted (or the runner stops): play the garbage collector for its Pods.
            await asyncio.shield(self._delete_pods(namespace, made))
            raise
        except kube.NotFound:
            log.info("job controller: Job %s disappeared while running", name)
            await self._delete_pods(namespace, made)
        except Exception:
            log.exception("job controller: running Job %s failed", name)
        finally:
            for pod in made:
                self._waiting.pop(f"{namespace}/{pod}", None)
            self._done.add(uid)
            self._jobs.pop(uid, None)

    async def _delete_pods(self, namespace: str, names: list[str]) -> None:
        for pod in names:
            with contextlib.suppress(kube.KubeError):
                await self.client.delete(kube.PODS, namespace, pod)

    async def _finish(self, job: Body, status: Body) -> None:
        metadata = job["metadata"]
        await self.client.patch(
            kube.JOBS, metadata.get("namespace") or "default", metadata["name"], {"status": status}, "status"
        )

    async def _execute(self, job: Body, name: str, namespace: str, made: list[str]) -> None:
        spec = job.get("spec") or {}
        if spec.get("completionMode") == "Indexed":
            await self._execute_indexed(job, name, namespace, made)
            return
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        failjob = failjob_codes(job)
        status = dict(job.get("status") or {})
        failed = int(status.get("failed") or 0)
        start_time = status.get("startTime") or pods.now()
        loop = asyncio.get_running_loop()
        started = loop.time()
        overdue = finished_status(
            failed,
            0,
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
            start_time,
        )
        while True:
            remaining = None if not deadline else float(deadline) - (loop.time() - started)
            if remaining is not None and remaining <= 0:
                await self._finish(job, overdue)
                return
            pod_name = f"{name}-{''.join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))}"
            ended: asyncio.Future[Outcome] = loop.create_future()
            self._waiting[f"{namespace}/{pod_name}"] = ended
            made.append(pod_name)
            await self.client.create(kube.PODS, namespace, pod_for(job, pod_name))
            active = {"active": 1, "startTime": start_time, "failed": failed or None, "ready": 0}
            await self.client.patch(kube.JOBS, namespace, name, {"status": active}, "status")
            try:
                outcome = await asyncio.wait_for(ended, remaining)
            except TimeoutError:
                # As the Job controller does: delete the active Pod (its kubelet stops it), fail the Job.
                await self._delete_pods(namespace, [pod_name])
                await self._finish(job, {**overdue, "failed": failed + 1})
                return
            if outcome.exit_code == 0:
                await self._finish(job, finished_status(failed, 1, "Complete", "", "", start_time))
                return
            failed += 1
            if outcome.exit_code in failjob:
                message = (
                    f"Container worker for pod {namespace}/{pod_name} failed with exit code "
                    f"{outcome.exit_code} matching FailJob rule at index 0"
                )
                await self._finish(
                    job, finished_status(failed, 0, "Failed", "PodFailurePolicy", message, start_time)
                )
                return
            if failed > backoff_limit:
                message = "Job has reached the specified backoff limit"
                await self._finish(
                    job, finished_status(failed, 0, "Failed", "BackoffLimitExceeded", message, start_time)
                )
                return
            await self.client.patch(
                kube.JOBS, namespace, name, {"status": {"failed": failed, "active": 0}}, "status"
            )

    async def _execute_indexed(self, job: Body, name: str, namespace: str, made: list[str]) -> None:
        """An Indexed Job: `completions` indexes, at most `parallelism` Pods at once; a failed index is
        retried alone (within backoffLimitPerIndex if set, else the Job's backoffLimit over all
        indexes); a FailJob exit code fails the whole Job."""
        spec = job.get("spec") or {}
        completions = int(spec.get("completions") or 1)
        slots = asyncio.Semaphore(int(spec.get("parallelism") or 1))
        backoff_limit = int(spec.get("backoffLimit", 6))
        per_index = spec.get("backoffLimitPerIndex")
        failjob = failjob_codes(job)
        start_time = (job.get("status") or {}).get("startTime") or pods.now()
        loop = asyncio.get_running_loop()
        completed: set[int] = set()
        failed_indexes: set[int] = set()
        counts = {"failed": 0, "active": 0}
        verdict: list[tuple[str, str]] = []

        async def report() -> None:
            status = {
                "active": counts["active"],
                "startTime": start_time,
                "failed": counts["failed"] or None,
                "succeeded": len(completed) or None,
                "completedIndexes": index_ranges(completed) or None,
                "ready": 0,
            }
            await self.client.patch(kube.JOBS, namespace, name, {"status": status}, "status")

        async def one(index: int) -> None:
            failures = 0
            async with slots:
                while not verdict:
                    pod_name = f"{name}-{index}-{''.join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))}"
                    ended: asyncio.Future[Outcome] = loop.create_future()
                    self._waiting[f"{namespace}/{pod_name}"] = ended
                    made.append(pod_name)
                    await self.client.create(kube.PODS, namespace, indexed_pod_for(job, pod_name, index))
                    counts["active"] += 1
                    await report()
                    try:
                        outcome = await ended
                    finally:
                        counts["active"] -= 1
                    if outcome.exit_code == 0:
                        completed.add(index)
                        await report()
                        return
                    counts["failed"] += 1
                    failures += 1
                    if outcome.exit_code in failjob:
                        verdict.append(
                            (
                                "PodFailurePolicy",
                                f"Container worker for pod {namespace}/{pod_name} failed with exit code "
                                f"{outcome.exit_code} matching FailJob rule at index 0",
                            )
                        )
                    elif per_index is not None and failures > int(per_index):
                        failed_indexes.add(index)
                        return
                    elif per_index is None and counts["failed"] > backoff_limit:
                        verdict.append(
                            ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
                        )
                    else:
                        await report()

        tasks = [asyncio.create_task(one(index)) for index in range(completions)]
        try:
            while tasks:
                done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
                tasks = list(pending)
                if verdict:  # the Job failed: its other Pods are stopped
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    tasks = []
        finally:
            for task in tasks:
                task.cancel()
        if not verdict and failed_indexes:
            verdict.append(("FailedIndexes", "Job has failed indexes"))
        if verdict:
            reason, message = verdict[0]
            await self._finish(
                job, finished_status(counts["failed"], len(completed), "Failed", reason, message, start_time)
            )
            return
        await self._finish(
            job, finished_status(counts["failed"], completions, "Complete", "", "", start_time)
        )


def indexed_pod_for(job: Mapping[str, Any], pod_name: str, index: int) -> Body:
    """The Pod of one index of an Indexed Job: its annotation, label and $JOB_COMPLETION_INDEX."""
    pod = pod_for(job, pod_name)
    pod["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(index)}
    pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] = str(index)
    spec = copy.deepcopy(pod["spec"])
    for container in spec.get("containers") or []:
        container["env"] = [
            *(container.get("env") or []),
            {"name": "JOB_COMPLETION_INDEX", "value": str(index)},
        ]
    pod["spec"] = spec
    return pod


def index_ranges(indexes: set[int]) -> str:
    """Kubernetes' completedIndexes notation: "0-2,5"."""
    ranges: list[list[int]] = []
    for index in sorted(indexes):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


class JobRunner:
    """The emulator's Job controller and the local kubelet together; `await run()` until cancelled.

    *mode* "process" runs each container's command locally (`command[0]` looked up in *bin_dir*,
    default the directory of `sys.executable`, then PATH); "instant" succeeds at once (benchmarks).
    The container env is this process's env (unless *inherit_env* is False), the Pod's, *extra_env*.
    """

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
        workdir: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.controller = JobController(client, namespace, relist_seconds)
        runtime = (
            InstantRuntime()
            if mode == "instant"
            else ProcessRuntime(bin_dir or Path(sys.executable).parent, None if inherit_env else {})
        )
        self._workdir = workdir
        self.kubelet = LocalKubelet(
            client,
            namespace,
            workdir or Path(tempfile.gettempdir()),  # replaced in run() when not given
            runtime,
            overrides=extra_env,
            max_parallel=max_parallel,
            on_finished=self.controller.pod_finished,
            keep_directories=False,
            log_dir=log_dir,
        )

    async def run(self) -> None:
        with contextlib.ExitStack() as stack:
            if self._workdir is None:
                self.kubelet.workdir = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="crawljob-pods-"))
                )
            kubelet = asyncio.create_task(self.kubelet.run(), name="local-kubelet")
            try:
                await self.controller.run()
            finally:
                kubelet.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await kubelet
