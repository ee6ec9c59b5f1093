"""The podman runtime's pure parts: the `podman run` command line and the runAsNonRoot check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from crawljob.local import podman
from crawljob.local.pods import ContainerSpec, ContainerWaiting


def spec(**fields: object) -> ContainerSpec:
    base: dict[str, object] = {
        "name": "worker",
        "image": "localhost/crawljob-worker:0.1.0",
        "command": ["crawljob-worker"],
        "args": ["s3://b/k.csv", "--output", "s3://b/out/"],
        "env": {},
        "refs": {},
    }
    return ContainerSpec(**{**base, **fields})  # type: ignore[arg-type]


MOUNTS = podman.Mounts(
    Path("/w/termination-log"), {"/tmp": Path("/w/volumes/tmp")}, Path("/w/serviceaccount")
)


def test_run_argv_carries_user_read_only_root_mounts_env_names_and_entrypoint() -> None:
    argv = podman.run_argv(
        spec(read_only_root=True, message_path="/dev/termination-log"),
        "crawljob-ns-pod",
        ["AWS_SECRET_ACCESS_KEY", "CRAWLJOB_NAME"],
        "10001:10001",
        MOUNTS,
        "/crawljob-ns-pod",
    )
    text = " ".join(argv)
    assert argv[:3] == ["podman", "--runtime", "runc"]
    assert "--network host" in text and "--user 10001:10001" in text
    assert "--read-only --read-only-tmpfs=false" in text  # no tmpfs a Kubernetes pod would not have
    assert "--cgroup-parent /crawljob-ns-pod" in text and "--memory" not in argv
    assert "--volume /w/termination-log:/dev/termination-log:rw" in text
    assert "--volume /w/volumes/tmp:/tmp:rw" in text
    assert "--volume /w/serviceaccount:/var/run/secrets/kubernetes.io/serviceaccount:ro" in text
    # Env values travel in podman's own environment, never on its command line.
    assert "--env AWS_SECRET_ACCESS_KEY --env CRAWLJOB_NAME" in text
    entry = argv.index("--entrypoint")
    assert json.loads(argv[entry + 1]) == ["crawljob-worker"]
    assert argv[entry + 2 :] == ["localhost/crawljob-worker:0.1.0", "s3://b/k.csv", "--output", "s3://b/out/"]


def test_run_argv_without_command_keeps_the_image_entry_point_and_uses_podman_memory_without_cgroup() -> None:
    argv = podman.run_argv(spec(command=[], args=["--help"], memory_limit=2**26), "n", [], "0", MOUNTS, None)
    assert "--entrypoint" not in argv
    assert argv[-2:] == ["localhost/crawljob-worker:0.1.0", "--help"]
    assert argv[argv.index("--memory") + 1] == str(2**26) and "--read-only" not in argv


@pytest.mark.parametrize(
    ("fields", "image_user", "message"),
    [
        ({"run_as_non_root": True}, "", "image will run as root"),
        ({"run_as_non_root": True}, "app", "non-numeric user (app)"),
        ({"run_as_non_root": True, "run_as_user": 0}, "10001", "image will run as root"),
    ],
)
def test_run_as_non_root_refuses_root_and_unverifiable_users(
    fields: dict[str, object], image_user: str, message: str
) -> None:
    with pytest.raises(ContainerWaiting, match=re.escape(message)) as refused:
        podman.check_non_root(spec(**fields), image_user)
    assert refused.value.reason == "CreateContainerConfigError"


def test_run_as_non_root_accepts_a_numeric_non_root_user_from_the_pod_or_the_image() -> None:
    podman.check_non_root(spec(run_as_non_root=True), "10001:10001")
    podman.check_non_root(spec(run_as_non_root=True, run_as_user=10001), "root")
    assert podman.effective_user(spec(run_as_user=10001, run_as_group=10002), "") == ("10001:10002", 10001)
    assert podman.effective_user(spec(), "10001:10001") == ("10001:10001", 10001)


def test_container_names_are_valid_for_podman() -> None:
    assert podman.container_name("ns-1/cj.abc-x7k2p") == "crawljob-ns-1-cj.abc-x7k2p"
