"""Standard Kubernetes conditions (type, status, reason, message, lastTransitionTime): a pure helper.

kopf has none; this keeps lastTransitionTime stable while a condition's status does not change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Condition = dict[str, Any]


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: str,
    generation: int | None = None,
) -> list[Condition]:
    """A copy of *conditions* with *type_* set; lastTransitionTime moves only when status changes."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    result: list[Condition] = []
    found = False
    for existing in conditions or ():
        item = dict(existing)
        if item.get("type") == type_:
            found = True
            changed = item.get("status") != status_text
            item.update(status=status_text, reason=reason)
            _set_message(item, message)
            if changed or not item.get("lastTransitionTime"):
                item["lastTransitionTime"] = now
            if generation is not None:
                item["observedGeneration"] = generation
        result.append(item)
    if not found:
        new: Condition = {"type": type_, "status": status_text, "reason": reason, "lastTransitionTime": now}
        _set_message(new, message)
        if generation is not None:
            new["observedGeneration"] = generation
        result.append(new)
    return result


def _set_message(condition: Condition, message: str | None) -> None:
    # An empty message is left out rather than sent as "" or null: a real API server (seen on 1.20)
    # refused these conditions with 422 "message in body must be of type string".
    if message:
        condition["message"] = message
    else:
        condition.pop("message", None)


def get_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of *type_*, or None."""
    for item in conditions or ():
        if item.get("type") == type_:
            return item
    return None
