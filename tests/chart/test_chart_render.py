"""The chart lints, renders, and every manifest is valid against the Kubernetes schemas (offline)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart_render import (
    CHART,
    CRD,
    KUBERNETES_VERSION,
    NAMESPACE,
    ROOT,
    VALUES_ALL,
    Manifest,
    helm,
    named,
    of_kind,
    render,
)

# Kinds from CRDs kubernetes-validate has no schema for: checked by hand below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def validate(manifest: Manifest) -> None:
    """Raise kubernetes_validate.ValidationError if the manifest breaks the Kubernetes schema (strict)."""
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("values", [[], [VALUES_ALL]], ids=["defaults", "all-options"])
def test_helm_lint_strict_passes(values: list[Path]) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_rendered_manifest_is_valid_kubernetes(manifests: list[Manifest]) -> None:
    errors = []
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
            continue
        try:
            validate(manifest)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {error.message}")
    assert not errors, "\n".join(errors)


def test_validation_catches_a_broken_manifest(default_manifests: list[Manifest]) -> None:
    """The validator itself rejects what the cluster would: guards against a check that can't fail."""
    deployment = json.loads(json.dumps(of_kind(default_manifests, "Deployment")[0]))
    deployment["spec"]["replicas"] = "two"
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy2"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_service_monitors_select_the_metrics_services(all_manifests: list[Manifest]) -> None:
    monitors = of_kind(all_manifests, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"crawl-receiver", "crawl-operator"}
    services = of_kind(all_manifests, "Service")
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        selector = monitor["spec"]["selector"]["matchLabels"]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        matching = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matching) == 1, monitor["metadata"]["name"]
        assert endpoint["port"] in {port["name"] for port in matching[0]["spec"]["ports"]}


def test_default_render_has_the_expected_objects(default_manifests: list[Manifest]) -> None:
    kinds = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in default_manifests)
    assert kinds == sorted(
        [
            "Deployment/demo-crawljob-operator",
            "Deployment/demo-crawljob-receiver",
            "Pod/demo-crawljob-test-healthz",
            "PodDisruptionBudget/demo-crawljob-receiver",  # on by default: 2 receiver replicas
            "Role/demo-crawljob-operator",
            "Role/demo-crawljob-receiver",
            "Role/demo-crawljob-worker",
            "RoleBinding/demo-crawljob-operator",
            "RoleBinding/demo-crawljob-receiver",
            "RoleBinding/demo-crawljob-worker",
            "Secret/demo-crawljob-webhook",
            "Service/demo-crawljob-operator-metrics",
            "Service/demo-crawljob-receiver",
            "ServiceAccount/demo-crawljob-operator",
            "ServiceAccount/demo-crawljob-receiver",
            "ServiceAccount/demo-crawljob-worker",
        ]
    )


def test_all_options_render_ingress_pdb_and_monitoring(all_manifests: list[Manifest]) -> None:
    ingress = named(all_manifests, "Ingress", "crawl-receiver")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["crawljob.example.com", "hooks.example.com"], "secretName": "crawljob-tls"}
    ]
    routes = {
        (rule["host"], path["path"], path["pathType"], path["backend"]["service"]["name"])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    # Only the webhook is public: /metrics, /openapi.json and the probes stay in the cluster.
    assert routes == {
        (host, "/v1/trigger", "Exact", "crawl-receiver")
        for host in ("crawljob.example.com", "hooks.example.com")
    }
    pdb = named(all_manifests, "PodDisruptionBudget", "crawl-receiver")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 2
    # existingSecret: the chart makes no webhook Secret of its own.
    assert not of_kind(all_manifests, "Secret")


def test_receiver_pdb_follows_the_replica_count() -> None:
    assert of_kind(render(sets=["receiver.replicaCount=1"]), "PodDisruptionBudget") == []
    (pdb,) = of_kind(render(sets=["receiver.replicaCount=3"]), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert of_kind(
        render(sets=["receiver.replicaCount=1", "receiver.podDisruptionBudget.enabled=true"]),
        "PodDisruptionBudget",
    )


def test_network_policies_admit_only_the_served_ports(all_manifests: list[Manifest]) -> None:
    receiver = named(all_manifests, "NetworkPolicy", "crawl-receiver")["spec"]
    assert receiver["ingress"] == [
        {"ports": [{"port": 9090, "protocol": "TCP"}], "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
        {"ports": [{"port": 9095, "protocol": "TCP"}]},
    ]
    operator = named(all_manifests, "NetworkPolicy", "crawl-operator")["spec"]
    assert operator["ingress"] == [{"ports": [{"port": 9091, "protocol": "TCP"}]}]
    workers = [
        m for m in of_kind(all_manifests, "NetworkPolicy") if m["metadata"]["name"].endswith("-worker")
    ]
    (worker,) = workers
    assert worker["metadata"]["namespace"] == "crawls"
    assert worker["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in worker["spec"]


def test_receiver_metrics_have_a_port_of_their_own_that_the_service_monitor_scrapes(
    all_manifests: list[Manifest],
) -> None:
    service = named(all_manifests, "Service", "crawl-receiver")
    assert {(port["name"], port["port"]) for port in service["spec"]["ports"]} >= {("metrics", 9095)}
    (deployment,) = [
        m for m in of_kind(all_manifests, "Deployment") if m["metadata"]["name"] == "crawl-receiver"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "CRAWLJOB_METRICS_PORT", "value": "9095"} in container["env"]
    assert {"name": "metrics", "containerPort": 9095, "protocol": "TCP"} in container["ports"]
    monitor = named(all_manifests, "ServiceMonitor", "crawl-receiver")
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    # 0 keeps /metrics on the webhook port: no metrics port anywhere, the monitor scrapes http.
    manifests = render([VALUES_ALL], sets=["receiver.metricsPort=0"])
    service = named(manifests, "Service", "crawl-receiver")
    assert [port["name"] for port in service["spec"]["ports"]] == ["http"]
    monitor = named(manifests, "ServiceMonitor", "crawl-receiver")
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["http"]


def test_pdb_falls_back_to_policy_v1beta1_on_kubernetes_1_20() -> None:
    manifests = render([VALUES_ALL], kube_version="1.20.2")
    (pdb,) = [m for m in of_kind(manifests, "PodDisruptionBudget") if "receiver" in m["metadata"]["name"]]
    assert pdb["apiVersion"] == "policy/v1beta1"
    # Everything else the chart renders is served by a 1.20 API server too.
    served_by_1_20 = {
        "v1",
        "apps/v1",
        "networking.k8s.io/v1",
        "rbac.authorization.k8s.io/v1",
        "policy/v1beta1",
        "monitoring.coreos.com/v1",
    }
    assert {m["apiVersion"] for m in manifests} <= served_by_1_20


def test_generated_webhook_secret_holds_a_random_token_and_hmac_key(
    default_manifests: list[Manifest],
) -> None:
    import base64

    secret = named(default_manifests, "Secret", "demo-crawljob-webhook")
    token = base64.b64decode(secret["data"]["token"]).decode()
    hmac_key = base64.b64decode(secret["data"]["hmacKey"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{40}", token)
    assert re.fullmatch(r"[A-Za-z0-9]{48}", hmac_key)
    again = named(render(), "Secret", "demo-crawljob-webhook")
    assert again["data"]["token"] != secret["data"]["token"], "a fresh install must get a fresh token"


def test_given_token_is_used_and_auth_none_needs_no_secret() -> None:
    import base64

    secret = named(render(sets=["receiver.auth.token=s3cret"]), "Secret", "demo-crawljob-webhook")
    assert base64.b64decode(secret["data"]["token"]) == b"s3cret"
    open_receiver = render(sets=["receiver.auth.mode=none"])
    assert not of_kind(open_receiver, "Secret")
    deployment = named(open_receiver, "Deployment", "demo-crawljob-receiver")
    assert not deployment["spec"]["template"]["spec"]["volumes"][1:], "no webhook secret volume"


def test_chart_version_follows_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == package
    assert chart["appVersion"] == package


def test_every_value_has_a_comment() -> None:
    """Each key in values.yaml has a `# --` comment right above it, or sits inside a commented value."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    commented_parents: list[tuple[int, bool]] = []  # (indent, commented) of the enclosing keys
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)(- )?[A-Za-z][\w.-]*:", line)
        if not match:
            continue
        indent = len(match.group(1))
        while commented_parents and commented_parents[-1][0] >= indent:
            commented_parents.pop()
        above = number - 1
        while (
            above >= 0
            and lines[above].strip().startswith("#")
            and not lines[above].strip().startswith("# --")
        ):
            above -= 1  # continuation lines of a multi-line comment
        commented = above >= 0 and lines[above].strip().startswith("# --") and above < number
        inside_commented = any(flag for _, flag in commented_parents)
        is_section = line.rstrip().endswith(":") and not commented  # its children carry the comments
        if not (commented or inside_commented or is_section):
            missing.append(f"values.yaml:{number + 1}: {line.strip()}")
        commented_parents.append((indent, commented))
    assert not missing, "\n".join(missing)


def test_notes_tell_the_webhook_url_wiring_and_how_to_watch() -> None:
    result = helm(
        "install",
        "demo",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        "--values",
        str(VALUES_ALL),
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "https://crawljob.example.com/v1/trigger" in notes
    for needle in (
        "aws sns subscribe",
        "EventBridge",
        "mc admin config set",
        "kubectl -n crawls get crawljobs -w",
        "X-Crawljob-Signature",
    ):
        assert needle in notes, needle


def structural_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """Problems that make a CRD schema non-structural (or unexplained), per the apiextensions rules."""
    problems = []
    preserves = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in schema and not schema.get("x-kubernetes-int-or-string"):
        problems.append(f"{path or '.'}: no type")
    is_element = path.endswith(("[]", "{}"))  # items/values: the field above describes them
    if path and "description" not in schema and not is_element and path != ".metadata":
        problems.append(f"{path}: no description (kubectl explain shows nothing)")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: both properties and additionalProperties")
    for forbidden in ("$ref", "definitions", "dependencies", "patternProperties", "uniqueItems"):
        if forbidden in schema:
            problems.append(f"{path}: {forbidden} is not allowed")
    if (
        path != ".metadata"
        and schema.get("type") == "object"
        and not ("properties" in schema or "additionalProperties" in schema or preserves)
    ):
        problems.append(f"{path}: object without properties, additionalProperties or preserve-unknown-fields")
    for name, child in schema.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += structural_problems(schema["additionalProperties"], f"{path}{{}}")
    if "items" in schema:
        problems += structural_problems(schema["items"], f"{path}[]")
    for required in schema.get("required", []):
        if required not in schema.get("properties", {}):
            problems.append(f"{path}: required {required} is not a property")
    return problems


def test_crd_is_valid_and_its_schema_structural() -> None:
    crd = yaml.safe_load(CRD.read_text())
    validate(crd)
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert structural_problems(schema) == []
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["Bucket", "Key", "Phase", "Progress", "Rows", "Reason", "Age", "Message"]
    # kopf's bookkeeping under status survives pruning.
    assert schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True


def test_structural_check_finds_problems() -> None:
    broken = {"type": "object", "properties": {"spec": {"description": "x", "properties": {"a": {}}}}}
    problems = structural_problems(broken)
    assert ".spec: no type" in problems
    assert ".spec.a: no type" in problems
    assert ".spec.a: no description (kubectl explain shows nothing)" in problems


def test_resolving_versions_gives_the_receiver_s3_read_access_and_is_off_by_default() -> None:
    from chart_render import env_of

    def receiver_env(sets: list[str]) -> dict[str, Any]:
        manifests = render(sets=sets)
        deployment = next(
            m for m in of_kind(manifests, "Deployment") if m["metadata"]["name"].endswith("receiver")
        )
        return env_of(deployment["spec"]["template"]["spec"]["containers"][0])

    assert "CRAWLJOB_RESOLVE_VERSIONS" not in receiver_env([])
    env = receiver_env(
        ["receiver.resolveVersions=true", "s3.endpointUrl=http://minio:9000", "s3.existingSecret=s3-creds"]
    )
    assert env["CRAWLJOB_RESOLVE_VERSIONS"] == "true"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}
    }
