"""operator.ha: active/standby operators (kopf peering) rendered only when enabled; default unchanged."""

from __future__ import annotations

import kubernetes_validate
import pytest
from chart_render import (
    CHART,
    KUBERNETES_VERSION,
    Manifest,
    env_of,
    helm,
    named,
    of_kind,
    render,
    render_error,
)
from test_values import contract_names

from crawljob.operator import peering

HA = ["operator.ha.enabled=true"]


@pytest.fixture(scope="module")
def ha_manifests() -> list[Manifest]:
    return render(sets=HA)


def operator_container(manifest: Manifest) -> Manifest:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


def test_default_install_is_one_standalone_replica_with_a_recreate_strategy(
    default_manifests: list[Manifest],
) -> None:
    deployment = named(default_manifests, "Deployment", "demo-crawljob-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not of_kind(default_manifests, "StatefulSet")
    assert not [m for m in default_manifests if "kopf" in str(m["metadata"]["name"])]
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    env = env_of(operator_container(deployment))
    assert not {name for name in env if "PEERING" in name or name == "CRAWLJOB_PRIORITY"}


def test_ha_runs_a_statefulset_whose_pods_take_distinct_priorities(ha_manifests: list[Manifest]) -> None:
    assert not [m for m in of_kind(ha_manifests, "Deployment") if m["metadata"]["name"].endswith("operator")]
    statefulset = named(ha_manifests, "StatefulSet", "demo-crawljob-operator")
    spec = statefulset["spec"]
    assert spec["replicas"] == 2
    assert spec["podManagementPolicy"] == "Parallel"
    assert (
        spec["serviceName"]
        == named(ha_manifests, "Service", "demo-crawljob-operator-metrics")["metadata"]["name"]
    )
    env = env_of(operator_container(statefulset))
    assert env["CRAWLJOB_PEERING"] == "demo-crawljob-operator"
    assert env["CRAWLJOB_PEERING_IDENTITY"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["CRAWLJOB_PRIORITY"] == "ordinal"
    assert env["CRAWLJOB_PEERING_LIFETIME"] == "30"
    assert {name for name in env if name.startswith("CRAWLJOB_")} <= contract_names()
    # The StatefulSet names its pods <name>-<ordinal>; the operator turns that into its priority.
    pods = [f"{statefulset['metadata']['name']}-{ordinal}" for ordinal in range(spec["replicas"])]
    priorities = [peering.parse_priority(env["CRAWLJOB_PRIORITY"], pod) for pod in pods]
    assert priorities == [0, -1]  # distinct by construction; pod 0 is the preferred active one
    # A standby on another node: soft anti-affinity on the operator's own pods.
    [term] = statefulset["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_ha_installs_the_kopfpeering_crd_kept_on_uninstall(ha_manifests: list[Manifest]) -> None:
    crd = named(ha_manifests, "CustomResourceDefinition", "kopfpeerings.kopf.dev")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["spec"]["group"] == peering.GROUP and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == peering.KIND
    (version,) = crd["spec"]["versions"]
    assert version["name"] == peering.VERSION
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True  # kopf writes status.<identity>


def test_every_ha_manifest_is_valid_kubernetes_and_lints(ha_manifests: list[Manifest]) -> None:
    errors = []
    for manifest in ha_manifests:
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {error.message}")
    assert not errors, "\n".join(errors)
    result = helm("lint", "--strict", str(CHART), "--set", HA[0], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ha_options_replicas_lifetime_and_an_existing_crd() -> None:
    manifests = render(
        sets=[*HA, "operator.ha.replicas=3", "operator.ha.peeringLifetimeSeconds=15",
              "operator.ha.createPeeringCRD=false"]
    )  # fmt: skip
    statefulset = named(manifests, "StatefulSet", "demo-crawljob-operator")
    assert statefulset["spec"]["replicas"] == 3
    assert env_of(operator_container(statefulset))["CRAWLJOB_PEERING_LIFETIME"] == "15"
    assert not of_kind(manifests, "CustomResourceDefinition")
    rules = named(manifests, "Role", "demo-crawljob-operator")["rules"]
    assert any(rule["apiGroups"] == ["kopf.dev"] for rule in rules)  # RBAC is still needed


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("operator.ha.replicas=0", "/operator/ha/replicas"),
        ("operator.ha.peeringLifetimeSeconds=0", "/operator/ha/peeringLifetimeSeconds"),
        ("operator.ha.enable=true", "'enable' not allowed"),
    ],
)
def test_schema_rejects_bad_ha_values(setting: str, complaint: str) -> None:
    assert complaint in render_error(sets=[setting])


def test_ha_has_a_disruption_budget_evicting_one_replica_at_a_time(
    ha_manifests: list[Manifest], default_manifests: list[Manifest]
) -> None:
    statefulset = named(ha_manifests, "StatefulSet", "demo-crawljob-operator")
    pdb = named(ha_manifests, "PodDisruptionBudget", "demo-crawljob-operator")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == statefulset["spec"]["selector"]
    assert not [
        m for m in of_kind(default_manifests, "PodDisruptionBudget") if "operator" in m["metadata"]["name"]
    ]
    (old,) = [
        m
        for m in of_kind(render(sets=HA, kube_version="1.20.2"), "PodDisruptionBudget")
        if "operator" in m["metadata"]["name"]
    ]
    assert old["apiVersion"] == "policy/v1beta1"
