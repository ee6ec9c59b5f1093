"""Least-privilege RBAC: exactly the verbs each component needs, no wildcards, bound to its own account."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from chart_render import ROOT, Manifest, env_of, named, of_kind

# (apiGroup, resource) -> verbs. The API calls of each component, one line each, and why.
RECEIVER_CALLS = {
    ("crawljob.io", "crawljobs"): {"create", "get"},  # create per event; 409 → duplicate
    ("crawljob.io", "crawlsources"): {"list"},  # routing events to a source's template (re-listed)
}
# Calls the operator makes (crawljob.operator.handlers; kopf runs with scanning disabled, so it
# reads no namespaces or CRDs; peerings only with HA, see PEERING_CALLS).
OPERATOR_CALLS = {
    # kopf watches them (list + watch); garbage collection of finished CrawlJobs deletes them; the
    # crawljob.io/phase and crawljob.io/bucket labels are kept in sync with a merge patch;
    # CrawlSource sweeps create them (get on a 409: an existing one, or a name collision).
    ("crawljob.io", "crawljobs"): {"get", "list", "watch", "create", "patch", "delete"},
    # Sweeps: kopf watches CrawlSources and the sweeper re-lists them; their status is merge-patched.
    ("crawljob.io", "crawlsources"): {"list", "watch"},
    ("crawljob.io", "crawlsources/status"): {"patch"},
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
# Only with operator.ha.enabled (active/standby): kopf's peering keeps the replicas' keep-alives in
# a KopfPeering object (list + watch it, patch its status), and the operator's gate reads and
# watches it (get, watch) and creates it when missing (create). The chart always watches one namespace: never the
# cluster-scoped ClusterKopfPeering, which the code reads only when watching all namespaces.
PEERING_CALLS = {
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch", "create"},
}
PEERING_CALLS_IN_CODE = {
    ("kopf.dev", "kopfpeerings"): {"get", "watch", "create"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "watch", "create"},
}
WORKER_CALLS = {
    # progress, merge patch; a shard reads the status to sum every shard's progress
    ("crawljob.io", "crawljobs/status"): {"get", "patch"},
}
EXPECTED = {"receiver": RECEIVER_CALLS, "operator": OPERATOR_CALLS, "worker": WORKER_CALLS}


def operator_calls() -> dict[tuple[str, str], set[str]]:
    """The operator's API calls, as documented above."""
    return OPERATOR_CALLS


PACKAGE = ROOT / "operator" / "crawljob"
VERBS = ("create", "get", "list", "watch", "patch", "delete")
# Each program is a subpackage: the receiver's API calls are in crawljob/receiver/, the operator's in
# crawljob/operator/ (the local stack plays the cluster for tests and `crawljob run`: not scanned).


def receiver_modules() -> list[Path]:
    return sorted((PACKAGE / "receiver").glob("*.py"))


def operator_modules() -> list[Path]:
    return sorted((PACKAGE / "operator").glob("*.py"))


def calls_in_code(paths: Iterable[Path]) -> dict[tuple[str, str], set[str]]:
    """API calls read from the source: `f(..., kube.X, ...)` whose name holds a verb, and kopf watches.

    A helper such as `_list_quietly(state, kube.PODS, ...)` counts as a list of pods; a patch call
    passing "status" is a patch of the status subresource; `kopf.on.event(group, version, plural)`
    is a list and a watch.
    """
    from crawljob import kube
    from crawljob import resource as crawljob_resource

    def value_of(arg: ast.expr) -> object:
        """A constant, or a constant of crawljob.resource (e.g. resource.PLURAL)."""
        if isinstance(arg, ast.Constant):
            return arg.value
        if isinstance(arg, ast.Attribute) and ast.unparse(arg.value) == "resource":
            return getattr(crawljob_resource, arg.attr, None)
        return None

    found: dict[tuple[str, str], set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            constants = [value_of(arg) for arg in node.args]
            if name == "event" and ast.unparse(function).endswith("kopf.on.event") and len(constants) >= 3:
                group, _, plural = constants[:3]
                found.setdefault((str(group), str(plural)), set()).update({"list", "watch"})
                continue
            verbs = [verb for verb in VERBS if verb in name.lower()]
            resources = [
                getattr(kube, arg.attr)
                for arg in node.args
                if isinstance(arg, ast.Attribute) and ast.unparse(arg.value) == "kube"
                and isinstance(getattr(kube, arg.attr, None), kube.Resource)
            ]  # fmt: skip
            for resource in resources:
                plural = f"{resource.plural}/status" if "status" in constants else resource.plural
                found.setdefault((resource.group, plural), set()).update(verbs[:1])
    return {key: verbs for key, verbs in found.items() if verbs}


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


def test_the_calls_found_in_the_operator_code_are_the_documented_ones() -> None:
    """The list above is not stale: the operator's code makes exactly these calls (besides the
    finalizers update, which only an admission plugin asks for)."""
    found = calls_in_code(operator_modules())
    documented = {key: verbs for key, verbs in operator_calls().items() if key[1] != "crawljobs/finalizers"}
    assert found == documented | PEERING_CALLS_IN_CODE


def test_with_ha_the_operator_role_adds_exactly_the_peering_calls() -> None:
    from chart_render import render

    manifests = render(sets=["operator.ha.enabled=true"])
    granted = grants(role(manifests, "operator", "demo-crawljob")["rules"])
    assert granted == operator_calls() | PEERING_CALLS
    namespaced = {key: verbs for key, verbs in PEERING_CALLS_IN_CODE.items() if key[1] == "kopfpeerings"}
    for key, verbs in namespaced.items():
        assert verbs <= granted[key], key
    assert not of_kind(manifests, "ClusterRole") and not of_kind(manifests, "ClusterRoleBinding")


def test_the_calls_found_in_the_receiver_code_are_granted(default_manifests: list[Manifest]) -> None:
    found = calls_in_code(receiver_modules())
    assert found, "the receiver creates CrawlJobs: the scan must find that call"
    granted = grants(role(default_manifests, "receiver", "demo-crawljob")["rules"])
    for key, verbs in found.items():
        assert verbs <= granted.get(key, set()), key


def test_the_call_scan_reads_helpers_subresources_and_kopf_watches(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import kopf\n"
        "from crawljob import kube\n"
        "async def f(client, state):\n"
        "    await client.patch(kube.CRAWLJOBS, 'ns', 'name', {}, 'status')\n"
        "    await _list_quietly(state, kube.PODS, 'ns', {})\n"
        "    await client.delete(kube.JOBS, 'ns', 'name')\n"
        "kopf.on.event('batch', 'v1', 'jobs')(f)\n"
    )
    assert calls_in_code([source]) == {
        ("crawljob.io", "crawljobs/status"): {"patch"},
        ("", "pods"): {"list"},
        ("batch", "jobs"): {"delete", "list", "watch"},
    }


def test_only_the_operator_may_touch_jobs_and_pods(default_manifests: list[Manifest]) -> None:
    for component in ("receiver", "worker"):
        granted = grants(role(default_manifests, component, "demo-crawljob")["rules"])
        assert not {key for key in granted if key[1] in {"jobs", "pods", "secrets", "events"}}, component
        # Listing CrawlSources is the receiver's only read beyond a 409's get.
        reads = {
            verb for key, verbs in granted.items() if key != ("crawljob.io", "crawlsources") for verb in verbs
        }
        assert not reads & {"delete", "list", "watch"}, component


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
