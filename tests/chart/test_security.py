"""Every pod the chart renders (and every worker pod the operator will make) is hardened."""

from __future__ import annotations

import json
import re

from chart_render import ROOT, Manifest, env_of, named, pod_specs

HARDENED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def assert_hardened_pod(label: str, pod: Manifest) -> None:
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True, label
    assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0, label
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}, label
    assert "hostNetwork" not in pod and "hostPID" not in pod, label


def test_every_pod_and_container_is_hardened(manifests: list[Manifest]) -> None:
    pods = list(pod_specs(manifests))
    assert len(pods) == 3  # receiver, operator, helm test hook
    for label, pod in pods:
        assert_hardened_pod(label, pod)
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["securityContext"] == HARDENED_CONTAINER, f"{label}/{container['name']}"
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert set(resources[kind]) >= {"cpu", "memory"}, f"{label}/{container['name']} {kind}"


def test_writable_tmp_under_the_read_only_root(default_manifests: list[Manifest]) -> None:
    for name in ("demo-crawljob-receiver", "demo-crawljob-operator"):
        pod = named(default_manifests, "Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


def test_operator_passes_hardened_worker_settings(manifests: list[Manifest]) -> None:
    (operator,) = [
        d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    ]
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    worker_pod = json.loads(env["CRAWLJOB_WORKER_SECURITY_CONTEXT"])
    assert_hardened_pod("worker", {"securityContext": worker_pod})
    resources = json.loads(env["CRAWLJOB_WORKER_RESOURCES"])
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert isinstance(json.loads(env["CRAWLJOB_WORKER_ENV"]), list)


def test_images_run_as_the_users_the_chart_declares(default_manifests: list[Manifest]) -> None:
    """runAsNonRoot can verify only a numeric USER; chart and Dockerfiles agree on it."""
    users = {}
    for dockerfile in ("operator/Dockerfile", "job-image/Dockerfile"):
        (user,) = re.findall(r"^USER (\S+)$", (ROOT / dockerfile).read_text(), flags=re.MULTILINE)
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and gid.isdigit(), f"{dockerfile}: USER {user} is not numeric"
        users[dockerfile] = (int(uid), int(gid))
    receiver = named(default_manifests, "Deployment", "demo-crawljob-receiver")["spec"]["template"]["spec"]
    context = receiver["securityContext"]
    assert users["operator/Dockerfile"] == (context["runAsUser"], context["runAsGroup"])
    operator = named(default_manifests, "Deployment", "demo-crawljob-operator")["spec"]["template"]["spec"]
    worker = json.loads(env_of(operator["containers"][0])["CRAWLJOB_WORKER_SECURITY_CONTEXT"])
    assert users["job-image/Dockerfile"] == (worker["runAsUser"], worker["runAsGroup"])


def test_probes_hit_the_health_endpoints(default_manifests: list[Manifest]) -> None:
    receiver = named(default_manifests, "Deployment", "demo-crawljob-receiver")
    (container,) = receiver["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert env_of(container)["CRAWLJOB_PORT"] == "8080"
    assert env_of(container)["CRAWLJOB_METRICS_PORT"] == "9090"
    assert receiver["spec"]["replicas"] == 2
    operator = named(default_manifests, "Deployment", "demo-crawljob-operator")
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    assert operator["spec"]["replicas"] == 1
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert env_of(container)["CRAWLJOB_HEALTH_PORT"] == "8081"


def test_operator_liveness_outlasts_a_control_plane_outage(default_manifests: list[Manifest]) -> None:
    """/healthz waits livenessSeconds without progress before failing; the probe adds its own
    failures on top, and together they stay well past an apiserver outage of a few minutes."""
    operator = named(default_manifests, "Deployment", "demo-crawljob-operator")
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert (env["CRAWLJOB_LIVENESS_SECONDS"], env["CRAWLJOB_WATCH_INACTIVITY_SECONDS"]) == ("300", "70")
    probe = container["livenessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= 60  # the endpoint decides, not the probe
    receiver = named(default_manifests, "Deployment", "demo-crawljob-receiver")
    (container,) = receiver["spec"]["template"]["spec"]["containers"]
    # The readiness check is a dry-run create with a 3 s timeout: the probe must wait for it.
    assert container["readinessProbe"]["timeoutSeconds"] > 3


def test_helm_test_hook_calls_the_receiver_healthz(default_manifests: list[Manifest]) -> None:
    pod = named(default_manifests, "Pod", "demo-crawljob-test-healthz")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "http://demo-crawljob-receiver.crawljob-system.svc:80/healthz" in script
    compile(script, "test-healthz", "exec")  # the inline Python at least parses
