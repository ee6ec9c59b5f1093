"""The local kubelet: runs the Pods that exist (a node for a cluster that has none).

One pod runner for both local stacks: the real control plane's tier (whose Job controller creates
the Pods) and the emulator's `crawljob run` (where `local/runner.py` plays the Job controller).
It watches Pods, runs each Pending Pod's first container through a runtime (a local process, real
images with podman, or instant), and writes the Pod status a kubelet would: Running, then
Succeeded/Failed with the container's terminated state and termination message. A Pod deleted
while running (cancel, Job deadline) has its container stopped. Status writes are retried until
they land (or the Pod is gone), with a log line, as a real kubelet's status manager does: an API
outage when a container exits delays its status, it never loses it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crawljob import kube
from crawljob.local import pods
from crawljob.local.podman import PodmanRuntime
from crawljob.local.pods import ContainerSpec, ContainerWaiting, Outcome, PodNotRunnable
from crawljob.local.runtime import InstantRuntime, ProcessRuntime, Runtime

logger = logging.getLogger("crawljob.kubelet")

Body = dict[str, Any]
SECRETS = kube.Resource("", "v1", "secrets")
SERVICE_ACCOUNTS = kube.Resource("", "v1", "serviceaccounts")
CONFIGMAPS = kube.Resource("", "v1", "configmaps")
CONFIG_RETRY_SECONDS = 5.0


def backoff_delays(first: float = 0.5, cap: float = 10.0) -> Callable[[int], float]:
    """Capped exponential delays by attempt number (1, 2, …)."""
    return lambda attempt: min(cap, first * 2 ** (attempt - 1))


class StatusWriter:
    """Writes one Pod's latest status until it lands: retried with backoff, superseded by newer ones."""

    def __init__(self, client: kube.KubeClient, namespace: str, name: str, delays: Callable[[int], float]):
        self.client, self.namespace, self.name, self.delays = client, namespace, name, delays
        self._latest: Body | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.gone = False  # the Pod was deleted: nothing more to write

    def set(self, status: Body) -> None:
        """Make *status* the one to write (replacing any not yet written)."""
        self._latest = status
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._write_loop(), name=f"status-{self.name}")

    async def flush(self) -> bool:
        """Wait until the latest status is written; False when the Pod is gone."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return not self.gone

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _write_loop(self) -> None:
        attempt = 0
        while self._changed.is_set():
            self._changed.clear()
            status = self._latest
            assert status is not None
            try:
                await self.client.patch(
                    kube.PODS, self.namespace, self.name, {"status": status}, subresource="status"
                )
                attempt = 0
            except kube.NotFound:
                self.gone = True
                return
            except kube.KubeError as error:
                attempt += 1
                delay = self.delays(attempt)
                logger.warning(
                    "pod %s/%s: writing its status (%s) failed (%s); retrying in %.1fs (attempt %d)",
                    self.namespace,
                    self.name,
                    status.get("phase"),
                    error,
                    delay,
                    attempt,
                )
                self._changed.set()  # this (or a newer) status is still unwritten
                await asyncio.sleep(delay)
        self._task = None


class LocalKubelet:
    """Run Pods that carry *required_label* (``job-name``: Pods of Jobs); *namespace* None: all.

    The container's environment is the Pod's env, then *overrides* (a process runtime adds its own
    environment under it); a runtime that mounts ServiceAccount tokens also gets
    KUBERNETES_SERVICE_HOST/PORT, as every container in a cluster does.
    *on_finished* hears of each container's end once its status is written (the emulator's Job
    controller, in the same process, uses it instead of a Pod watch).
    """

    def __init__(
        self,
        client: kube.KubeClient,
        namespace: str | None,
        workdir: Path,
        runtime: Runtime | None = None,
        overrides: Mapping[str, str] | None = None,
        required_label: str | None = "job-name",
        max_parallel: int | None = None,
        on_finished: Callable[[str, str, Outcome], None] | None = None,
        status_delays: Callable[[int], float] | None = None,
        keep_directories: bool = True,
        log_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.workdir = workdir
        self.runtime: Runtime = runtime or ProcessRuntime()
        self.overrides = dict(overrides or {})
        self.required_label = required_label
        self.slots = asyncio.Semaphore(max_parallel) if max_parallel else None
        self.on_finished = on_finished
        self.status_delays = status_delays or backoff_delays()
        self.keep_directories = keep_directories
        self.log_dir = log_dir  # keep each container's output at pods.pod_log_path (for `kubectl logs`)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # by namespace/name

    @property
    def active(self) -> int:
        """How many Pods this kubelet is running or about to run."""
        return sum(1 for task in self._tasks.values() if not task.done())

    async def run(self) -> None:
        """Watch Pods until cancelled; re-establish the watch when the server closes it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                try:
                    # A watch without a resourceVersion starts with ADDED for every existing Pod.
                    async for event in self.client.watch(kube.PODS, self.namespace, timeout_seconds=60):
                        self._on_event(str(event.get("type")), event.get("object") or {})
                except kube.KubeError as error:
                    logger.warning("pod watch interrupted (%s); re-watching", error)
                    await asyncio.sleep(0.5)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop every container still running and wait for their tasks."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_event(self, kind: str, pod: Body) -> None:
        metadata = pod.get("metadata") or {}
        key = f"{metadata.get('namespace')}/{metadata.get('name')}"
        labels = metadata.get("labels") or {}
        if not metadata.get("name") or (self.required_label and self.required_label not in labels):
            return
        if kind == "DELETED" or metadata.get("deletionTimestamp"):
            task = self._tasks.get(key)
            if task is not None and not task.done():
                logger.info("pod %s deleted: stopping its container", key)
                task.cancel()
            if kind == "DELETED":
                self._tasks.pop(key, None)
            return
        if kind in ("ADDED", "MODIFIED") and key not in self._tasks and pods.is_pending(pod):
            self._tasks[key] = asyncio.create_task(self._run_pod(pod), name=f"kubelet-{key}")

    async def _resolve_refs(self, namespace: str, spec: ContainerSpec) -> dict[str, str]:
        values: dict[str, str] = {}
        for env_name, (kind, obj, key) in spec.refs.items():
            resource = SECRETS if kind == "secret" else CONFIGMAPS
            try:
                data = (await self.client.get(resource, namespace, obj)).get("data") or {}
            except kube.NotFound:
                raise PodNotRunnable(f'{kind} "{obj}" not found') from None
            if key not in data:
                raise PodNotRunnable(f"couldn't find key {key} in {kind} {namespace}/{obj}")
            values[env_name] = base64.b64decode(data[key]).decode() if kind == "secret" else str(data[key])
        return values

    async def _write_token(self, namespace: str, spec: ContainerSpec, directory: Path) -> None:
        """The ServiceAccount's token, ca.crt and namespace, as a kubelet mounts them (1.20: its Secret)."""
        account = await self.client.get(SERVICE_ACCOUNTS, namespace, spec.service_account)
        names = [ref.get("name") for ref in account.get("secrets") or [] if ref.get("name")]
        if not names:
            raise PodNotRunnable(f'serviceaccount "{spec.service_account}" has no token yet')
        data = (await self.client.get(SECRETS, namespace, names[0])).get("data") or {}
        target = directory / "serviceaccount"
        target.mkdir()
        for file in ("token", "ca.crt", "namespace"):
            if file in data:
                (target / file).write_bytes(base64.b64decode(data[file]))
                (target / file).chmod(0o644)

    async def _write_secret_volumes(self, namespace: str, spec: ContainerSpec, directory: Path) -> None:
        """Each mounted Secret volume as a directory of files (`directory/secrets/<mount index>`)."""
        for index, secret in enumerate(spec.secret_volumes.values()):
            try:
                data = (await self.client.get(SECRETS, namespace, secret)).get("data") or {}
            except kube.NotFound:
                raise PodNotRunnable(f'secret "{secret}" not found') from None
            target = directory / "secrets" / str(index)
            target.mkdir(parents=True)
            for key, value in data.items():
                (target / key).write_bytes(base64.b64decode(value))
                (target / key).chmod(0o644)

    async def _start(self, pod: Body, key: str, writer: StatusWriter, started: Callable[[], None]) -> Outcome:
        """Run the container; while it cannot start, the Pod waits (as a kubelet's does) and we retry."""
        namespace = pod["metadata"]["namespace"]
        reported = ""
        while True:
            directory = Path(tempfile.mkdtemp(prefix=f"{pod['metadata']['name']}-", dir=self.workdir))
            try:
                spec = pods.container_spec(pod)
                env = {**spec.env, **await self._resolve_refs(namespace, spec), **self.overrides}
                if self.runtime.mounts_token:
                    env.update(self.service_env)
                    # 1.20's ServiceAccount admission plugin mounts the token Secret itself.
                    if spec.mount_token and pods.TOKEN_DIR not in spec.secret_volumes:
                        await self._write_token(namespace, spec, directory)
                    await self._write_secret_volumes(namespace, spec, directory)
                if self.log_dir is not None:  # the runtime's output.log is written there
                    kept = pods.pod_log_path(self.log_dir, namespace, pod["metadata"]["name"], spec.name)
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    (directory / "output.log").symlink_to(kept)
                return await self.runtime.run(key, spec, env, directory, started)
            except ContainerWaiting as error:
                if str(error) != reported:
                    reported = str(error)
                    logger.warning("pod %s cannot start (%s): %s", key, error.reason, error)
                    writer.set(pods.waiting_status(pod, error.reason, reported))
            except kube.NotFound:
                raise
            except kube.KubeError as error:
                logger.warning("pod %s: reading its configuration failed (%s); retrying", key, error)
            finally:
                if not self.keep_directories:
                    shutil.rmtree(directory, ignore_errors=True)
            await asyncio.sleep(CONFIG_RETRY_SECONDS)

    @property
    def service_env(self) -> dict[str, str]:
        """KUBERNETES_SERVICE_HOST/PORT: where in-cluster clients find the API (on the host network)."""
        url = urllib.parse.urlsplit(self.client.connection.server)
        port = url.port or (443 if url.scheme == "https" else 80)
        return {"KUBERNETES_SERVICE_HOST": url.hostname or "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)}

    async def _run_pod(self, pod: Body) -> None:
        namespace, name = pod["metadata"]["namespace"], str(pod["metadata"]["name"])
        key = f"{namespace}/{name}"
        writer = StatusWriter(self.client, namespace, name, self.status_delays)
        started_at = pods.now()

        def started() -> None:
            nonlocal started_at
            started_at = pods.now()
            writer.set(pods.running_status(pod, started_at))

        try:
            async with self.slots or contextlib.nullcontext():
                outcome = await self._start(pod, key, writer, started)
            if outcome.reason == "StartError":
                logger.warning("pod %s: the container did not start: %s", key, outcome.message)
            logger.info("pod %s: exited with %s (%s)", key, outcome.exit_code, outcome.reason)
            writer.set(pods.terminated_status(pod, outcome, started_at, pods.now()))
            if await writer.flush() and self.on_finished is not None:
                self.on_finished(namespace, name, outcome)
        except kube.NotFound:
            logger.info("pod %s is gone", key)
        except asyncio.CancelledError:
            await writer.close()
            raise


def make_runtime(name: str, bin_dir: Path | None = None) -> Runtime:
    """The runtime called *name*: process, podman or instant."""
    if name == "podman":
        return PodmanRuntime()
    if name == "instant":
        return InstantRuntime()
    return ProcessRuntime(bin_dir)


async def _serve(args: argparse.Namespace) -> None:
    connection = kube.discover_connection(kubeconfig=args.kubeconfig, environ=os.environ)
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (how supervisors and tests stop us) cancels the run, whose cleanup stops the containers.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with kube.KubeClient(connection) as client:
        kubelet = LocalKubelet(
            client,
            args.namespace,
            Path(args.workdir),
            make_runtime(args.runtime),
            required_label=None if args.all_pods else "job-name",
        )
        with contextlib.suppress(asyncio.CancelledError):
            await kubelet.run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crawljob.local.kubelet --kubeconfig FILE [--namespace NS] [--runtime podman]``."""
    parser = argparse.ArgumentParser(description="Run the Pods of Jobs in a node-less cluster.")
    parser.add_argument(
        "--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig (env KUBECONFIG)"
    )
    parser.add_argument("--namespace", default=None, help="namespace to watch (default: all namespaces)")
    parser.add_argument(
        "--all-pods", action="store_true", help="run every Pod, not only those of Jobs (label job-name)"
    )
    parser.add_argument("--workdir", default=tempfile.gettempdir() + "/crawljob-kubelet", help="pod dirs")
    parser.add_argument(
        "--runtime",
        choices=("process", "podman", "instant"),
        default="process",
        help="process: the container's command as a local process; podman: the Pod's image "
        "(crawljob.local.podman); instant: succeed at once without running anything",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
