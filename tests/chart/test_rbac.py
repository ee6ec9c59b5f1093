"""Least-privilege RBAC: exactly the verbs each component needs, no wildcards, bound to its own account."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from chart_render import Manifest, env_of, named, of_kind

# (apiGroup, resource) -> verbs. The API calls of each component, one line each, and why.
RECEIVER_CALLS = {
    ("crawljob.io", "crawljobs"): {"create", "get"},  # create per event; 409 → duplicate
}
# Calls the operator makes (crawljob_operator.handlers; kopf runs standalone with scanning disabled,
# so it reads no peerings, namespaces or CRDs). If the operator package keeps its own list
# (crawljob_operator.rbac.API_CALLS, same shape), the test uses that instead.
OPERATOR_CALLS = {
    # kopf watches them (list + watch); garbage collection of finished CrawlJobs deletes them.
    ("crawljob.io", "crawljobs"): {"list", "watch", "delete"},
    # phase, conditions, progress of the queue, result: merge patches of the status subresource.
    ("crawljob.io", "crawljobs/status"): {"patch"},
    # Jobs are created with blockOwnerDeletion: the OwnerReferencesPermissionEnforcement admission
    # plugin then requires update on the owner's finalizers.
    ("crawljob.io", "crawljobs/finalizers"): {"update"},
    # Jobs: watched; created per run (get on a 409 to adopt its own); deleted on cancel/supersede.
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    # Pods: watched for the worker's termination message and failure reasons; deleted with a
    # cancelled Job where garbage collection is slow or absent.
    ("", "pods"): {"list", "watch", "delete"},
    # Events on the CrawlJobs (the handlers and kopf's warnings): core v1.
    ("", "events"): {"create"},
}
WORKER_CALLS = {
    ("crawljob.io", "crawljobs/status"): {"patch"},  # progress, merge patch
}
EXPECTED = {"receiver": RECEIVER_CALLS, "operator": OPERATOR_CALLS, "worker": WORKER_CALLS}


def operator_calls() -> dict[tuple[str, str], set[str]]:
    """The operator's API calls: its own list when the package keeps one, else the list above."""
    if importlib.util.find_spec("crawljob_operator.rbac") is None:
        return OPERATOR_CALLS
    from crawljob_operator import rbac  # type: ignore[attr-defined]

    return {key: set(verbs) for key, verbs in rbac.API_CALLS.items()}


def grants(rules: Iterable[Manifest]) -> dict[tuple[str, str], set[str]]:
    """Flatten RBAC rules into (apiGroup, resource) -> verbs."""
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def role(manifests: list[Manifest], component: str, prefix: str) -> Manifest:
    return named(manifests, "Role", f"{prefix}-{component}")


def test_no_rule_uses_a_wildcard(manifests: list[Manifest]) -> None:
    for manifest in of_kind(manifests, "Role") + of_kind(manifests, "ClusterRole"):
        for rule in manifest["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{manifest['metadata']['name']}: wildcard in {field}"
            assert "resourceNames" not in rule or rule["resourceNames"]
            assert "nonResourceURLs" not in rule


def test_each_role_grants_exactly_its_calls(default_manifests: list[Manifest]) -> None:
    expected = dict(EXPECTED, operator=operator_calls())
    for component, calls in expected.items():
        granted = grants(role(default_manifests, component, "demo-crawljob")["rules"])
        assert granted == calls, component


def test_operator_rbac_covers_every_api_call_it_makes(default_manifests: list[Manifest]) -> None:
    granted = grants(role(default_manifests, "operator", "demo-crawljob")["rules"])
    missing = {
        f"{group or 'core'}/{resource}: {verb}"
        for (group, resource), verbs in operator_calls().items()
        for verb in verbs
        if verb not in granted.get((group, resource), set())
    }
    assert not missing


def test_only_the_operator_may_touch_jobs_and_pods(default_manifests: list[Manifest]) -> None:
    for component in ("receiver", "worker"):
        granted = grants(role(default_manifests, component, "demo-crawljob")["rules"])
        assert not {key for key in granted if key[1] in {"jobs", "pods", "secrets", "events"}}, component
        assert not {verb for verbs in granted.values() for verb in verbs} & {"delete", "list", "watch"}


def test_roles_live_in_the_crawljob_namespace_and_bind_their_own_account(
    all_manifests: list[Manifest],
) -> None:
    accounts = {
        m["metadata"]["name"]: m["metadata"]["namespace"] for m in of_kind(all_manifests, "ServiceAccount")
    }
    assert accounts == {
        "crawl-webhook": "crawljob-system",
        "crawl-operator": "crawljob-system",
        "crawl-worker": "crawls",  # workers run next to their CrawlJobs
    }
    deployments = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in of_kind(all_manifests, "Deployment")
    }
    uses = {
        "receiver": deployments["crawl-receiver"]["serviceAccountName"],
        "operator": deployments["crawl-operator"]["serviceAccountName"],
        "worker": env_of(deployments["crawl-operator"]["containers"][0])["CRAWLJOB_WORKER_SERVICE_ACCOUNT"],
    }
    assert uses == {"receiver": "crawl-webhook", "operator": "crawl-operator", "worker": "crawl-worker"}
    for component, account in uses.items():
        binding = named(all_manifests, "RoleBinding", f"crawl-{component}")
        assert binding["metadata"]["namespace"] == "crawls"
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": f"crawl-{component}",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": accounts[account]}
        ]
        assert named(all_manifests, "Role", f"crawl-{component}")["metadata"]["namespace"] == "crawls"


def test_nothing_is_granted_cluster_wide(manifests: list[Manifest]) -> None:
    assert not of_kind(manifests, "ClusterRole")
    assert not of_kind(manifests, "ClusterRoleBinding")


def test_the_worker_identity_carries_the_workload_identity_annotation(all_manifests: list[Manifest]) -> None:
    worker = named(all_manifests, "ServiceAccount", "crawl-worker")
    assert worker["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/crawljob-worker"
    }
    assert worker["imagePullSecrets"] == [{"name": "registry-credentials"}]


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    from chart_render import render

    manifests = render(sets=["rbac.create=false"])
    assert not of_kind(manifests, "Role")
    assert not of_kind(manifests, "RoleBinding")
