"""The podman runtime of the local kubelet: each Pod's image as a container, as a kubelet runs it.

The image runs with the container's command/args (replacing its entry point and CMD, as in
Kubernetes), only the Pod's env (values, downward API, resolved Secret/ConfigMap refs), the
numeric `runAsUser`/`runAsGroup` (`runAsNonRoot` is checked against the image's USER first), a
read-only root filesystem, dropped capabilities, `emptyDir` volumes, the ServiceAccount token
mounted where in-cluster clients look for it, the termination-message file mounted at the
container's `terminationMessagePath`, on the host network (the API server and S3 are on
loopback). The memory limit is set on a cgroup of the Pod's own (a kubelet's pod cgroup), whose
OOM notifications tell an OOM kill (reason `OOMKilled`) from any other SIGKILL.
podman flags as tools/podman.sh uses them here: the runc runtime and explicit ulimits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crawljob.local.pods import (
    TOKEN_DIR,
    ContainerSpec,
    ContainerWaiting,
    Outcome,
    exit_outcome,
    termination_message,
)

log = logging.getLogger("crawljob.kubelet")

PODMAN = ("podman", "--runtime", "runc")
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PODMAN_ERRORS = (125, 126, 127)  # podman's own failures (the container never ran)


@dataclass(frozen=True)
class Mounts:
    """Host paths the container sees: the termination-message file, emptyDirs, the token directory."""

    message_file: Path
    empty_dirs: Mapping[str, Path]  # mount path → host directory
    token_dir: Path | None = None
    secret_dirs: Mapping[str, Path] = field(default_factory=dict)  # mount path → host directory


def container_name(key: str) -> str:
    """A podman container name for the Pod *key* (namespace/name)."""
    return "crawljob-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", key)


def effective_user(spec: ContainerSpec, image_user: str) -> tuple[str, int | None]:
    """The `--user` value and the numeric uid it runs as (None: not numeric, unverifiable)."""
    if spec.run_as_user is not None:
        group = f":{spec.run_as_group}" if spec.run_as_group is not None else ""
        return f"{spec.run_as_user}{group}", spec.run_as_user
    user = image_user or "0"
    head = user.split(":", 1)[0]
    return user, int(head) if head.isdigit() else None


def check_non_root(spec: ContainerSpec, image_user: str) -> None:
    """Refuse to start as root when runAsNonRoot is set (the kubelet's own words)."""
    if not spec.run_as_non_root:
        return
    _, uid = effective_user(spec, image_user)
    if uid is None:
        raise ContainerWaiting(
            "CreateContainerConfigError",
            f"container has runAsNonRoot and image has non-numeric user ({image_user}), cannot verify "
            "user is non-root",
        )
    if uid == 0:
        raise ContainerWaiting(
            "CreateContainerConfigError", "container has runAsNonRoot and image will run as root"
        )


def run_argv(
    spec: ContainerSpec,
    name: str,
    env_names: list[str],
    user: str,
    mounts: Mounts,
    cgroup_parent: str | None,
) -> list[str]:
    """The `podman run` command line for *spec* (env values travel in podman's environment)."""
    argv = [*PODMAN, "run", "--name", name, "--network", "host", *ULIMITS, "--user", user]
    argv += ["--pull", "never", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    if spec.read_only_root:
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if cgroup_parent is not None:
        argv += ["--cgroup-parent", cgroup_parent]
    elif spec.memory_limit is not None:
        argv += ["--memory", str(spec.memory_limit), "--memory-swap", str(spec.memory_limit)]
    for env_name in env_names:
        argv += ["--env", env_name]
    argv += ["--volume", f"{mounts.message_file}:{spec.message_path}:rw"]
    for path, host in mounts.empty_dirs.items():
        argv += ["--volume", f"{host}:{path}:rw"]
    for path, host in mounts.secret_dirs.items():
        argv += ["--volume", f"{host}:{path}:ro"]
    if mounts.token_dir is not None:
        argv += ["--volume", f"{mounts.token_dir}:{TOKEN_DIR}:ro"]
    if spec.command:
        argv += ["--entrypoint", json.dumps(spec.command)]
    argv.append(spec.image)
    if spec.args or spec.command:
        argv += spec.args  # Kubernetes: command without args drops the image's CMD too
    return argv


class MemoryCgroup:
    """A Pod cgroup (cgroup v1 memory controller) with the memory limit and an OOM-kill counter."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.path = CGROUP_ROOT / "memory" / name
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(limit))
        with contextlib.suppress(OSError):  # no swap accounting: nothing to limit
            (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit))
        # The memory controller's OOM notification (cgroup v1's cgroup.event_control).
        self._events = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._control = os.open(self.path / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        (self.path / "cgroup.event_control").write_text(f"{self._events} {self._control}")

    @staticmethod
    def available() -> bool:
        """cgroup v1 with a writable memory controller (root): else podman's --memory is used."""
        memory = CGROUP_ROOT / "memory"
        return (memory / "cgroup.event_control").exists() and os.access(memory, os.W_OK)

    def oom_killed(self) -> bool:
        try:
            return os.eventfd_read(self._events) > 0
        except BlockingIOError:
            return False

    def remove(self) -> None:
        os.close(self._events)
        os.close(self._control)
        for controller in CGROUP_ROOT.iterdir():  # podman made the parent in every controller
            for directory in sorted((controller / self.name).glob("**/"), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()


async def _podman(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *PODMAN, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace").strip()


class PodmanRuntime:
    """Runs the Pod's image with podman (see the module docstring)."""

    mounts_token = True

    async def run(
        self,
        key: str,
        spec: ContainerSpec,
        env: Mapping[str, str],
        directory: Path,
        started: Callable[[], None],
    ) -> Outcome:
        code, image_user = await _podman("image", "inspect", "--format", "{{.Config.User}}", spec.image)
        if code != 0:
            raise ContainerWaiting(
                "ErrImageNeverPull", f'image "{spec.image}" is not present with pull policy of Never here'
            )
        check_non_root(spec, image_user)
        user, _ = effective_user(spec, image_user)
        name = container_name(key)
        await _podman("rm", "--force", name)  # left by a kubelet that died
        message_file = directory / "termination-log"
        message_file.touch()
        message_file.chmod(0o666)
        empty_dirs: dict[str, Path] = {}
        for path, volume in spec.empty_dirs.items():
            host = directory / "volumes" / volume
            host.mkdir(parents=True, exist_ok=True)
            host.chmod(0o1777)
            empty_dirs[path] = host
        token_dir = directory / "serviceaccount"
        secret_dirs = {
            path: directory / "secrets" / str(index) for index, path in enumerate(spec.secret_volumes)
        }
        mounts = Mounts(message_file, empty_dirs, token_dir if token_dir.is_dir() else None, secret_dirs)
        cgroup = (
            MemoryCgroup(name, spec.memory_limit)
            if spec.memory_limit is not None and MemoryCgroup.available()
            else None
        )
        argv = run_argv(spec, name, sorted(env), user, mounts, f"/{name}" if cgroup else None)
        log_path = directory / "output.log"
        try:
            with log_path.open("wb") as output:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    env={"PATH": os.environ.get("PATH", os.defpath), **env},
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    # conmon writes a file named `oom` into its working directory when the container
                    # is OOM-killed: the Pod's own directory, not wherever the kubelet was started.
                    cwd=directory,
                )
                log.info("pod %s: running image %s as container %s", key, spec.image, name)
                started()
                try:
                    returncode = await process.wait()
                except asyncio.CancelledError:
                    await asyncio.shield(self._stop(name, process, spec.grace_seconds))
                    raise
            oom = cgroup.oom_killed() if cgroup is not None else await self._inspect_oom(name)
        finally:
            await asyncio.shield(_podman("rm", "--force", name))
            if cgroup is not None:
                cgroup.remove()
        logs = log_path.read_text(errors="replace")
        if returncode in PODMAN_ERRORS and not oom:
            return Outcome(128, "StartError", f"podman could not run {spec.image}: {logs.strip()[-500:]}")
        outcome = exit_outcome(returncode, "", oom_killed=oom)
        message = termination_message(
            message_file.read_text(errors="replace"), logs, outcome.exit_code, spec.message_policy
        )
        return exit_outcome(returncode, message, oom_killed=oom)

    @staticmethod
    async def _inspect_oom(name: str) -> bool:
        code, text = await _podman("inspect", "--format", "{{.State.OOMKilled}}", name)
        return code == 0 and text == "true"

    @staticmethod
    async def _stop(name: str, process: asyncio.subprocess.Process, grace: int) -> None:
        await _podman("stop", "--time", str(min(grace, 10)), name)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def podman_available() -> bool:
    """Whether podman is installed (the cluster tier then runs real images)."""
    return shutil.which("podman") is not None
