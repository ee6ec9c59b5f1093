"""Every metric the operator and the receiver export is documented in docs/operator.md (and no
documented one is missing), under one prefix scheme."""

from __future__ import annotations

import re
from pathlib import Path

from crawljob.operator.metrics import OperatorMetrics
from crawljob.receiver.metrics import ReceiverMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operator.md"
# Registered at operator start (it needs the standby gate), not by OperatorMetrics itself.
REGISTERED_AT_START = {"crawljob_replica_active"}


def exported() -> set[str]:
    names: set[str] = set()
    for registry in (OperatorMetrics().registry, ReceiverMetrics().registry):
        for family in registry.collect():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names | REGISTERED_AT_START


def documented() -> set[str]:
    return set(re.findall(r"^\| `(crawljob_[a-z_]+)` \|", DOCS.read_text(), re.MULTILINE))


def test_every_exported_metric_is_documented_and_every_documented_one_exported() -> None:
    assert exported() == documented()


def test_one_prefix_scheme() -> None:
    for name in exported():
        assert name.startswith("crawljob_") and not name.startswith("crawljob_operator_"), name
