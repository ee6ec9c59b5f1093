"""The names of every metric crawljob exports (operator and receiver), as Prometheus shows them."""

from __future__ import annotations

from crawljob.operator.metrics import OperatorMetrics
from crawljob.receiver.metrics import ReceiverMetrics

# Registered at operator start (it needs the standby gate), not by OperatorMetrics itself.
REGISTERED_AT_START = {"crawljob_replica_active"}


def exported() -> set[str]:
    names: set[str] = set()
    for registry in (OperatorMetrics().registry, ReceiverMetrics().registry):
        for family in registry.collect():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names | REGISTERED_AT_START
