"""A Pod as the local kubelet reads and reports it (pure: no I/O).

One set of rules for both uses of the kubelet (the emulator's `crawljob run` and the real
control-plane tier): what to run for a Pod's first container, and the status a kubelet writes.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINATION_LOG_ENV = "CRAWLJOB_TERMINATION_LOG"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MESSAGE_LIMIT = 4096  # what a kubelet keeps of a termination message
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: the tail of the logs, as a kubelet takes it
DEFAULT_GRACE_SECONDS = 30
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_FACTORS = {
    None: 1,
    "m": 0.001,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}

Body = dict[str, Any]


def pod_log_path(log_dir: Path, namespace: str, pod_name: str, container: str) -> Path:
    """Where a container's output is kept (as a kubelet keeps it for `kubectl logs`; the emulator serves it)."""
    return log_dir / namespace / pod_name / f"{container}.log"


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command/args: unknown references stay, ``$$`` is ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def memory_bytes(quantity: object) -> int | None:
    """A Kubernetes memory quantity (``64Mi``, ``1G``, ``500000``) in bytes; None when absent."""
    if quantity is None or quantity == "":
        return None
    match = _QUANTITY.match(str(quantity).strip())
    if not match:
        raise PodNotRunnable(f"resources.limits.memory {quantity!r} is not a Kubernetes quantity")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


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


class ContainerWaiting(Exception):
    """The container cannot start yet: the Pod stays Pending with this waiting reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PodNotRunnable(ContainerWaiting):
    """The Pod's configuration is wrong (a missing Secret, a bad quantity): CreateContainerConfigError."""

    def __init__(self, message: str) -> None:
        super().__init__("CreateContainerConfigError", message)


@dataclass(frozen=True)
class ContainerSpec:
    """What to run for a Pod's first container (secret and ConfigMap refs still unresolved)."""

    name: str
    image: str
    command: list[str]  # the image's entry point is replaced when non-empty
    args: list[str]
    env: dict[str, str]
    refs: dict[str, tuple[str, str, str]]  # env name → (kind "secret"|"configmap", object, key)
    message_policy: str = "File"
    message_path: str = DEFAULT_TERMINATION_PATH
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    read_only_root: bool = False
    memory_limit: int | None = None
    empty_dirs: dict[str, str] = field(default_factory=dict)  # mount path → volume name
    secret_volumes: dict[str, str] = field(default_factory=dict)  # mount path → Secret name
    service_account: str = "default"
    mount_token: bool = True
    grace_seconds: int = DEFAULT_GRACE_SECONDS

    @property
    def argv(self) -> list[str]:
        """command + args, for a runtime that has no image entry point to fall back on."""
        if not self.command:
            raise PodNotRunnable(
                f"container {self.name!r} has no command: the process runtime cannot read an image's "
                "entry point (use --runtime podman)"
            )
        return self.command + self.args


def container_spec(pod: Mapping[str, Any]) -> ContainerSpec:
    """Read a Pod's first container: env (values, downward API, refs), command, security, limits."""
    pod_spec = pod.get("spec") or {}
    containers = pod_spec.get("containers") or []
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
    pod_security = pod_spec.get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes") or [] if "emptyDir" in volume}
    empty_dirs = {
        str(mount["mountPath"]): str(mount["name"])
        for mount in container.get("volumeMounts") or []
        if mount.get("name") in volumes
    }
    secrets = {
        volume["name"]: str(volume["secret"].get("secretName"))
        for volume in pod_spec.get("volumes") or []
        if "secret" in volume
    }
    secret_volumes = {
        str(mount["mountPath"]): secrets[mount["name"]]
        for mount in container.get("volumeMounts") or []
        if mount.get("name") in secrets
    }
    limits = (container.get("resources") or {}).get("limits") or {}
    user = security.get("runAsUser")
    group = security.get("runAsGroup")
    return ContainerSpec(
        name=str(container.get("name") or "main"),
        image=str(container.get("image") or ""),
        command=[expand(str(part), env) for part in container.get("command") or []],
        args=[expand(str(part), env) for part in container.get("args") or []],
        env=env,
        refs=refs,
        message_policy=str(container.get("terminationMessagePolicy") or "File"),
        message_path=str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH),
        run_as_user=int(user) if user is not None else None,
        run_as_group=int(group) if group is not None else None,
        run_as_non_root=bool(security.get("runAsNonRoot")),
        read_only_root=bool(security.get("readOnlyRootFilesystem")),
        memory_limit=memory_bytes(limits.get("memory")),
        empty_dirs=empty_dirs,
        secret_volumes=secret_volumes,
        service_account=str(pod_spec.get("serviceAccountName") or "default"),
        mount_token=pod_spec.get("automountServiceAccountToken", True) is not False,
        grace_seconds=int(pod_spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)),
    )


@dataclass(frozen=True)
class Outcome:
    """How a container ended, as a runtime reports it."""

    exit_code: int
    reason: str  # Completed, Error, OOMKilled
    message: str = ""
    signal: int | None = None


def exit_outcome(returncode: int, message: str, oom_killed: bool = False) -> Outcome:
    """A process's return code (negative: killed by that signal) as a container runtime reports it."""
    if returncode < 0:
        return Outcome(128 - returncode, "OOMKilled" if oom_killed else "Error", message, -returncode)
    if oom_killed:
        return Outcome(returncode, "OOMKilled", message)
    return Outcome(returncode, "Completed" if returncode == 0 else "Error", message)


def termination_message(file_text: str, log_text: str, exit_code: int, policy: str) -> str:
    """The message a kubelet records: the file, else (FallbackToLogsOnError, on failure) the log tail."""
    message = file_text.strip()
    if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
        message = "\n".join(log_text.strip().splitlines()[-FALLBACK_LOG_LINES:])
    return message[-MESSAGE_LIMIT:]


def _container_status(pod: Mapping[str, Any], state: Body, ready: bool) -> Body:
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


def running_status(pod: Mapping[str, Any], started_at: str) -> Body:
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


def terminated_status(pod: Mapping[str, Any], outcome: Outcome, started_at: str, finished_at: str) -> Body:
    """The Pod status after the container exited (restartPolicy Never: the phase is final)."""
    terminated: Body = {
        "exitCode": outcome.exit_code,
        "reason": outcome.reason,
        "startedAt": started_at,
        "finishedAt": finished_at,
    }
    if outcome.signal is not None:
        terminated["signal"] = outcome.signal
    if outcome.message:
        terminated["message"] = outcome.message
    return {
        "phase": "Succeeded" if outcome.exit_code == 0 else "Failed",
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


def waiting_status(pod: Mapping[str, Any], reason: str, message: str) -> Body:
    """A container that cannot start (CreateContainerConfigError, ErrImageNeverPull…): the Pod stays Pending."""
    return {
        "phase": "Pending",
        "containerStatuses": [
            _container_status(pod, {"waiting": {"reason": reason, "message": message}}, ready=False)
        ],
    }


def is_pending(pod: Mapping[str, Any]) -> bool:
    """A Pod no kubelet has started yet (and that is not being deleted)."""
    metadata = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    return phase == "Pending" and not metadata.get("deletionTimestamp")
