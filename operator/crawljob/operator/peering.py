"""Active/standby by kopf peering: who acts, decided from the KopfPeering object (pure).

kopf peering is priority-based pausing, not leader election: every replica writes a keep-alive
(`status.<identity> = {priority, lifetime, lastseen}`) into one KopfPeering object, and a replica
pauses while another live replica has a higher *or equal* priority. kopf pauses its own watch
streams (so our handlers); `verdict()` applies the same rule to the operator's own background
loops (queue admission, Job creation, resync), which kopf does not know about.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crawljob.times import parse_time

GROUP = "kopf.dev"
VERSION = "v1"
KIND = "KopfPeering"
PLURAL = "kopfpeerings"
CLUSTER_KIND = "ClusterKopfPeering"
CLUSTER_PLURAL = "clusterkopfpeerings"

_ORDINAL = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class Verdict:
    """Whether this replica may act, why, and when the answer may change by time alone."""

    active: bool
    reason: str
    # Earliest deadline of a blocking peer: it counts as dead from then on (None: no such peer).
    recheck_at: datetime.datetime | None = None
    # When our own keep-alive was last written, if it is in the object (the others can see us).
    own_lastseen: datetime.datetime | None = None
    # Live peers with a lower priority: one of them may be acting until it sees us.
    lower: tuple[str, ...] = ()

    @property
    def visible(self) -> bool:
        return self.own_lastseen is not None


def verdict(
    peering_object: Mapping[str, Any] | None, identity: str, priority: int, now: datetime.datetime
) -> Verdict:
    """kopf's rule: act unless a live peer (not us) has a priority >= ours; no object: stand by.

    A peer is live until `lastseen + lifetime` (kopf's `Peer.is_dead`). An entry without a usable
    `lastseen` counts as seen now, as kopf does. One rule more than kopf's: act only while our own
    keep-alive is in the object. The others cannot see a replica that is not in it, and kopf
    removes it first thing when the operator shuts down, so the loops stop as soon as a standby
    may start.
    """
    if peering_object is None:
        return Verdict(False, "the peering object does not exist")
    peers = peering_object.get("status") or {}
    blocking: list[tuple[str, int, datetime.datetime]] = []
    lower: list[str] = []
    for peer_identity, info in peers.items():
        if peer_identity == identity or not isinstance(info, Mapping):
            continue
        try:
            peer_priority = int(info.get("priority", 0))
            lifetime = int(info.get("lifetime", 60))
        except (TypeError, ValueError):
            continue
        lastseen = parse_time(info.get("lastseen")) if info.get("lastseen") is not None else now
        if lastseen is None:
            continue
        deadline = lastseen + datetime.timedelta(seconds=lifetime)
        if deadline > now and peer_priority >= priority:
            blocking.append((str(peer_identity), peer_priority, deadline))
        elif deadline > now:
            lower.append(str(peer_identity))
    own = peers.get(identity)
    own_lastseen = None
    if isinstance(own, Mapping):
        own_lastseen = (parse_time(own["lastseen"]) if own.get("lastseen") is not None else None) or now
    if not blocking and own_lastseen is None:
        reason = "waiting for this replica's keep-alive to appear in the peering object"
        return Verdict(False, reason, None, None, tuple(sorted(lower)))
    if not blocking:
        reason = "no live peer with a higher or equal priority"
        return Verdict(True, reason, None, own_lastseen, tuple(sorted(lower)))
    higher = [peer for peer in blocking if peer[1] > priority]
    shown = higher or blocking
    relation = "higher" if higher else "the same"
    names = ", ".join(f"{name} ({peer_priority})" for name, peer_priority, _ in sorted(shown))
    return Verdict(
        False,
        f"standing by: live peer(s) with {relation} priority: {names}",
        min(deadline for _, _, deadline in blocking),
        own_lastseen,
        tuple(sorted(lower)),
    )


def parse_priority(value: str, identity: str) -> int:
    """An integer, or 'ordinal': minus the trailing number of *identity* (pod-0 → 0, pod-1 → -1).

    So the lowest ordinal of a StatefulSet is the preferred active replica and every replica's
    priority differs by construction (equal priorities would pause both).
    """
    text = value.strip()
    if text == "ordinal":
        match = _ORDINAL.search(identity)
        if match is None:
            raise ValueError(
                f"--priority ordinal needs an identity ending in -<number> (a StatefulSet pod name), "
                f"got {identity!r}"
            )
        return -int(match.group(1))
    try:
        return int(text)
    except ValueError as exc:
        raise ValueError(f"--priority must be an integer or 'ordinal', got {value!r}") from exc


def default_identity() -> str:
    """<hostname>/<pid>: distinct for two processes on one machine, stable for a pod's container."""
    return f"{socket.gethostname()}/{os.getpid()}"


def keepalive(priority: int, lifetime: int, now: datetime.datetime) -> dict[str, Any]:
    """One replica's entry in the peering object's status, as kopf writes it."""
    return {"priority": priority, "lifetime": lifetime, "lastseen": now.isoformat()}


def peering_manifest(
    name: str, namespace: str | None, peers: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The KopfPeering object (ClusterKopfPeering when *namespace* is None), with *peers*' entries."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    manifest: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND if namespace is not None else CLUSTER_KIND,
        "metadata": metadata,
    }
    if peers:
        manifest["status"] = {identity: dict(entry) for identity, entry in peers.items()}
    return manifest
