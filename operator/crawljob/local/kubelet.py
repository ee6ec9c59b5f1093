"""A local kubelet for a real control plane that has no nodes: it runs the Pods that already exist.

The real Job controller creates the Pods; this watches them, runs each Pod's first container
command as a local process (with the Pod's env), and writes the Pod status a kubelet would:
Running, then Succeeded/Failed with the container's terminated state and termination message.
It never creates Pods and never writes Job status (the Job controller does both).
A Pod deleted while running (cancel, Job deadline) has its process terminated.

The container's termination message path is a file inside the container; locally, the process
gets ``CRAWLJOB_TERMINATION_LOG`` pointing at a file of its own (the worker's documented option).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import logging
import os
import re
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crawljob import kube

logger = logging.getLogger(__name__)

TERMINATION_LOG_ENV = "CRAWLJOB_TERMINATION_LOG"
MESSAGE_LIMIT = 4096  # what a kubelet keeps of a termination message
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: the tail of the logs, as a kubelet takes it
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command/args: unknown references stay, ``$$`` is ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def field_value(pod: Mapping[str, Any], path: str) -> str | None:
    """The value of a downward-API ``fieldRef`` (metadata.name/namespace/uid, labels, annotations)."""
    metadata = pod.get("metadata") or {}
    simple = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid"}
    if path in simple:
        value = metadata.get(simple[path])
        return str(value) if value is not None else None
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        value = (metadata.get(match.group(1)) or {}).get(match.group(2))
        return str(value) if value is not None else None
    if path == "spec.serviceAccountName":
        return str((pod.get("spec") or {}).get("serviceAccountName") or "default")
    if path in ("status.podIP", "status.hostIP"):
        return "127.0.0.1"
    return None


@dataclass(frozen=True)
class ProcessSpec:
    """What to run for a Pod: argv and the env entries it declares (secret refs still unresolved)."""

    argv: list[str]
    env: dict[str, str]
    secret_refs: dict[str, tuple[str, str, str]]  # name → (kind "secret"|"configmap", object, key)
    message_policy: str


class PodNotRunnable(ValueError):
    """The Pod cannot be run locally (no command): it fails with this message."""


def process_spec(pod: Mapping[str, Any]) -> ProcessSpec:
    """Turn a Pod's first container into a local process description (pure)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    if not containers:
        raise PodNotRunnable("the pod has no containers")
    container = containers[0]
    env: dict[str, str] = {}
    refs: dict[str, tuple[str, str, str]] = {}
    for item in container.get("env") or []:
        name = item["name"]
        source = item.get("valueFrom") or {}
        if "value" in item or not source:
            env[name] = expand(str(item.get("value", "")), env)
        elif "fieldRef" in source:
            value = field_value(pod, source["fieldRef"].get("fieldPath", ""))
            if value is not None:
                env[name] = value
        elif "secretKeyRef" in source:
            refs[name] = ("secret", source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        elif "configMapKeyRef" in source:
            refs[name] = ("configmap", source["configMapKeyRef"]["name"], source["configMapKeyRef"]["key"])
    command = list(container.get("command") or [])
    if not command:
        raise PodNotRunnable(
            f"container {container.get('name')!r} has no command: the local kubelet cannot read "
            "an image's entry point"
        )
    argv = [expand(str(part), env) for part in command + list(container.get("args") or [])]
    return ProcessSpec(
        argv=argv,
        env=env,
        secret_refs=refs,
        message_policy=str(container.get("terminationMessagePolicy") or "File"),
    )


def _container_status(pod: Mapping[str, Any], state: dict[str, Any], ready: bool) -> dict[str, Any]:
    container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
    return {
        "name": container.get("name", "main"),
        "image": container.get("image") or "local",
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": ready,
        "state": state,
    }


def running_status(pod: Mapping[str, Any], started_at: str) -> dict[str, Any]:
    """The Pod status a kubelet writes once the container runs."""
    return {
        "phase": "Running",
        "startTime": started_at,
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": started_at},
            {"type": "Ready", "status": "True", "lastTransitionTime": started_at},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": started_at},
        ],
        "containerStatuses": [_container_status(pod, {"running": {"startedAt": started_at}}, ready=True)],
    }


def terminated_status(
    pod: Mapping[str, Any], exit_code: int, message: str, started_at: str, finished_at: str
) -> dict[str, Any]:
    """The Pod status after the container exited (restartPolicy Never: the phase is final)."""
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": finished_at,
    }
    if exit_code < 0:  # killed by a signal, as a container runtime reports it
        terminated["exitCode"] = 128 - exit_code
        terminated["signal"] = -exit_code
    if message:
        terminated["message"] = message
    return {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "startTime": started_at,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished_at},
            {
                "type": "ContainersReady",
                "status": "False",
                "reason": "PodCompleted",
                "lastTransitionTime": finished_at,
            },
        ],
        "containerStatuses": [_container_status(pod, {"terminated": terminated}, ready=False)],
    }


def termination_message(file_text: str, log_text: str, exit_code: int, policy: str) -> str:
    """The message a kubelet records: the file, else (FallbackToLogsOnError, on failure) the log tail."""
    message = file_text.strip()
    if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
        message = "\n".join(log_text.strip().splitlines()[-FALLBACK_LOG_LINES:])
    return message[-MESSAGE_LIMIT:]


def is_pending(pod: Mapping[str, Any]) -> bool:
    """A Pod no kubelet has started yet (and that is not being deleted)."""
    metadata = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    return phase == "Pending" and not metadata.get("deletionTimestamp")


@dataclass
class LocalKubelet:
    """Run Pods that carry *required_label* (``job-name``: Pods of Jobs) as processes.

    *namespace* None watches every namespace.
    """

    client: kube.KubeClient
    namespace: str | None
    workdir: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    required_label: str | None = "job-name"
    _running: dict[str, asyncio.subprocess.Process] = field(default_factory=dict, init=False)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)

    async def run(self) -> None:
        """Watch Pods until cancelled; re-establish the watch when the server closes it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                try:
                    # A watch without a resourceVersion starts with ADDED for every existing Pod.
                    async for event in self.client.watch(kube.PODS, self.namespace, timeout_seconds=60):
                        self._on_event(str(event.get("type")), event.get("object") or {})
                except kube.Unavailable as error:
                    logger.warning("pod watch interrupted (%s); re-watching", error)
                    await asyncio.sleep(0.5)
        finally:
            await self.close()

    async def close(self) -> None:
        """Terminate every process still running and wait for their tasks."""
        for process in list(self._running.values()):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_event(self, kind: str, pod: dict[str, Any]) -> None:
        metadata = pod.get("metadata") or {}
        name = f"{metadata.get('namespace')}/{metadata.get('name')}"
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if not metadata.get("name") or (self.required_label and self.required_label not in labels):
            return
        deleting = kind == "DELETED" or bool((pod.get("metadata") or {}).get("deletionTimestamp"))
        if deleting:
            process = self._running.get(name)
            if process is not None and process.returncode is None:
                logger.info("pod %s deleted: terminating its process", name)
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
            return
        if kind in ("ADDED", "MODIFIED") and name not in self._tasks and is_pending(pod):
            self._tasks[name] = asyncio.create_task(self._run_pod(pod), name=f"kubelet-{name}")

    async def _resolve_refs(self, namespace: str, spec: ProcessSpec) -> dict[str, str]:
        values: dict[str, str] = {}
        for env_name, (kind, obj, key) in spec.secret_refs.items():
            resource = kube.Resource("", "v1", "secrets" if kind == "secret" else "configmaps")
            body = await self.client.get(resource, namespace, obj)
            if kind == "secret":
                values[env_name] = base64.b64decode((body.get("data") or {})[key]).decode()
            else:
                values[env_name] = str((body.get("data") or {})[key])
        return values

    async def _patch_status(self, pod: Mapping[str, Any], status: dict[str, Any]) -> bool:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            await self.client.patch(kube.PODS, namespace, name, {"status": status}, subresource="status")
        except kube.NotFound:
            return False
        return True

    async def _run_pod(self, pod: dict[str, Any]) -> None:
        name = str(pod["metadata"]["name"])
        key = f"{pod['metadata']['namespace']}/{name}"
        started_at = now()
        try:
            spec = process_spec(pod)
            env = {**self.environ, **spec.env, **await self._resolve_refs(pod["metadata"]["namespace"], spec)}
        except (PodNotRunnable, KeyError, kube.KubeError) as error:
            logger.warning("pod %s cannot run: %s", name, error)
            status = terminated_status(pod, 1, f"local kubelet: {error}", started_at, now())
            status["containerStatuses"][0]["state"]["terminated"]["reason"] = "CreateContainerConfigError"
            await self._patch_status(pod, status)
            return
        directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        message_file = directory / "termination-log"
        message_file.touch()
        env[TERMINATION_LOG_ENV] = str(message_file)
        log_path = directory / "output.log"
        if not await self._patch_status(pod, running_status(pod, started_at)):
            return
        logger.info("pod %s: running %s", name, spec.argv)
        with log_path.open("wb") as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *spec.argv, env=env, cwd=directory, stdout=log, stderr=asyncio.subprocess.STDOUT
                )
            except OSError as error:
                message = f"local kubelet: cannot start {spec.argv[0]!r}: {error}"
                await self._patch_status(pod, terminated_status(pod, 127, message, started_at, now()))
                return
            self._running[key] = process
            try:
                exit_code = await process.wait()
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGKILL)
                raise
            finally:
                self._running.pop(key, None)
        message = termination_message(
            message_file.read_text(errors="replace"),
            log_path.read_text(errors="replace"),
            exit_code,
            spec.message_policy,
        )
        logger.info("pod %s: exited with %s", name, exit_code)
        await self._patch_status(pod, terminated_status(pod, exit_code, message, started_at, now()))


async def _serve(args: argparse.Namespace) -> None:
    connection = kube.discover_connection(kubeconfig=args.kubeconfig, environ=os.environ)
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (how supervisors and tests stop us) cancels the run, whose cleanup kills the Pods' processes.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with kube.KubeClient(connection) as client:
        with contextlib.suppress(asyncio.CancelledError):
            await LocalKubelet(client, args.namespace, Path(args.workdir)).run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crawljob.local.kubelet --kubeconfig FILE [--namespace NS]``."""
    parser = argparse.ArgumentParser(
        description="Run the Pods of Jobs in a node-less cluster as local processes."
    )
    parser.add_argument(
        "--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig (env KUBECONFIG)"
    )
    parser.add_argument("--namespace", default=None, help="namespace to watch (default: all namespaces)")
    parser.add_argument("--workdir", default=tempfile.gettempdir() + "/crawljob-kubelet", help="process dirs")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
