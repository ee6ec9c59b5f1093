"""Kubernetes Event manifests about a CrawlJob (or a CrawlSource) (pure: no I/O)."""

from __future__ import annotations

import datetime
import secrets
from typing import Any

from crawljob import resource
from crawljob.models import Meta

MAX_MESSAGE_LENGTH = 1024


def build_event(
    crawljob: Meta,
    reason: str,
    message: str,
    warning: bool,
    instance: str,
    now: datetime.datetime,
    kind: str = resource.KIND,
    action: str = "Reconcile",
) -> dict[str, Any]:
    """A core/v1 Event on *crawljob* (an object of *kind*), reported by the operator replica *instance* at *now*."""
    namespace = crawljob.namespace
    micro = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    seconds = micro[:19] + "Z"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{crawljob.name}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": resource.API_VERSION,
            "kind": kind,
            "name": crawljob.name,
            "namespace": namespace,
            "uid": crawljob.uid,
        },
        "reason": reason,
        "message": message[:MAX_MESSAGE_LENGTH],
        "type": "Warning" if warning else "Normal",
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "eventTime": micro,
        "count": 1,
        "action": action,
        "source": {"component": resource.MANAGED_BY},
        "reportingComponent": resource.MANAGED_BY,
        "reportingInstance": instance,
    }
