"""The names of every metric crawljob exports (operator and receiver), as Prometheus shows them."""

from __future__ import annotations

import asyncio

from crawljob.operator.health import Health
from crawljob.operator.metrics import OperatorMetrics
from crawljob.operator.settings import OperatorSettings
from crawljob.receiver.metrics import ReceiverMetrics

# Registered at operator start (it needs the standby gate), not by OperatorMetrics itself.
REGISTERED_AT_START = {"crawljob_replica_active"}


async def _health() -> Health:
    return Health(OperatorSettings())  # the operator's process-wide registry (health.py)


def exported() -> set[str]:
    names: set[str] = set()
    health = asyncio.run(_health())
    for registry in (OperatorMetrics().registry, ReceiverMetrics().registry, health.registry):
        for family in registry.collect():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names | REGISTERED_AT_START
