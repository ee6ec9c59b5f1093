"""What a CrawlJob's jobTemplate may override (issue 13, finding 8)."""

from __future__ import annotations

from typing import Any

import pytest

from crawljob.operator.overrides import override_refusal
from crawljob.operator.settings import OperatorSettings

STRICT = OperatorSettings(
    worker_image="registry.example/crawljob-worker:1.0", worker_service_account="crawljob-worker"
)


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ({"image": "attacker/miner:latest"}, "spec.jobTemplate.image"),
        ({"image": "registry.example/crawljob-worker:1.0-evil"}, "spec.jobTemplate.image"),
        ({"serviceAccountName": "operator"}, "spec.jobTemplate.serviceAccountName"),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]},
            "spec.jobTemplate.env",
        ),
    ],
)
def test_overrides_are_refused_by_default_naming_the_field(template: dict[str, Any], field: str) -> None:
    refusal = override_refusal({"jobTemplate": template}, STRICT)
    assert refusal is not None and refusal.startswith(field)


@pytest.mark.parametrize(
    "template",
    [
        {},
        {"image": "registry.example/crawljob-worker:1.0"},
        {"serviceAccountName": "crawljob-worker"},
        {"resources": {"limits": {"memory": "2Gi"}}, "nodeSelector": {"pool": "batch"}},
    ],
)
def test_what_changes_nothing_dangerous_is_allowed(template: dict[str, Any]) -> None:
    assert override_refusal({"jobTemplate": template}, STRICT) is None


def test_settings_open_each_override() -> None:
    settings = OperatorSettings(
        worker_image="w:1",
        allowed_images=("registry.example/tools/*", "other:2"),
        allow_service_account_override=True,
        allow_env_override=True,
    )
    spec = {
        "jobTemplate": {
            "image": "registry.example/tools/csv:3",
            "serviceAccountName": "sa",
            "env": [{"name": "A", "value": "1"}],
        }
    }
    assert override_refusal(spec, settings) is None
    assert override_refusal({"jobTemplate": {"image": "other:2"}}, settings) is None
    assert override_refusal({"jobTemplate": {"image": "other:3"}}, settings) is not None
