"""Kubernetes Event manifests about a CrawlJob (pure: no I/O)."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Mapping
from typing import Any

from crawljob import resource

MAX_MESSAGE_LENGTH = 1024


def build_event(
    crawljob: Mapping[str, Any],
    reason: str,
    message: str,
    warning: bool,
    instance: str,
    now: datetime.datetime,
) -> dict[str, Any]:
    """A core/v1 Event on *crawljob*, reported by the operator replica *instance* at *now*."""
    metadata = crawljob.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    micro = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    seconds = micro[:19] + "Z"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{metadata.get('name')}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "name": metadata.get("name"),
            "namespace": namespace,
            "uid": metadata.get("uid"),
        },
        "reason": reason,
        "message": message[:MAX_MESSAGE_LENGTH],
        "type": "Warning" if warning else "Normal",
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "eventTime": micro,
        "count": 1,
        "action": "Reconcile",
        "source": {"component": resource.MANAGED_BY},
        "reportingComponent": resource.MANAGED_BY,
        "reportingInstance": instance,
    }
