"""CrawlJob constants and deterministic naming (pure: no I/O)."""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUP = "crawljob.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CrawlJob"
PLURAL = "crawljobs"

# Labels put on every Job and Pod the operator makes, so they can be found again.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_CRAWLJOB = "crawljob.io/crawljob"
MANAGED_BY = "crawljob-operator"
# Labels on CrawlJobs, for `kubectl get cjob -l crawljob.io/phase=Failed,crawljob.io/bucket=inbox`:
# the receiver sets the bucket; the operator keeps both in sync with the spec and the status.
LABEL_PHASE = "crawljob.io/phase"
LABEL_BUCKET = "crawljob.io/bucket"
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")

# Annotations: what users write to ask for a new run or a cancellation; what the receiver and the
# operator record.
ANNOTATION_RERUN = "crawljob.io/rerun"
ANNOTATION_CANCEL = "crawljob.io/cancel"
ANNOTATION_RUN = "crawljob.io/run"  # on a Job: which run of its CrawlJob it is
# A per-shard run (servers without Indexed Jobs) has one Job per shard: the label says which shard
# (also on its Pods), the annotation how many shards the run has.
LABEL_SHARD = "crawljob.io/shard"
ANNOTATION_SHARDS = "crawljob.io/shards"
# On a per-shard run's Jobs: the whole run's deadline (each Job's activeDeadlineSeconds is what is
# left of it when the Job is made).
ANNOTATION_DEADLINE = "crawljob.io/deadline"
ANNOTATION_RAW_KEY = "crawljob.io/raw-key"  # the key as the event spelled it, when decoding changed it

# The worker's container in every Job's Pod (the operator reads its state and termination message).
WORKER_CONTAINER = "worker"
# Where the operator writes when no output URI is configured (`s3://<source bucket>/crawljob-output/
# <name>/`); the receiver's loop guard ignores events under it in any bucket.
DEFAULT_OUTPUT_PREFIX = "crawljob-output/"

# The Job name must leave room for the pod suffix the Job controller appends ("-" + 5 chars),
# and pods carry a "job-name" label (≤ 63). 52 keeps Indexed Job pod names valid too.
MAX_NAME_LENGTH = 52
# 25 base32 characters = 125 bits of SHA-256: two objects share a name only after ~2^62 tries
# (birthday bound), where 10 hex digits (40 bits) took ~1.2 M. Base32 keeps it a DNS label.
HASH_LENGTH = 25

PHASES = ("Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled", "Superseded")
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled", "Superseded"})

_NOT_DNS = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class ObjectRef:
    """One S3 object version named by an event: what a CrawlJob processes."""

    bucket: str
    key: str  # decoded, as S3 shows it
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    sequencer: str | None = None
    event_time: str | None = None

    def identity(self) -> str:
        """The version discriminator used for naming: versionId, else eTag, else sequencer."""
        return self.version_id or (self.etag or "").strip('"') or self.sequencer or ""


def slugify(text: str, limit: int) -> str:
    """A readable DNS-label fragment of *text*: lowercase ASCII letters, digits and single dashes."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NOT_DNS.sub("-", ascii_text.lower()).strip("-")
    return slug[:limit].strip("-")


def crawljob_name(ref: ObjectRef, attempt: int = 0) -> str:
    """Deterministic CrawlJob (and Job) name: slug of the key's file name + hash of the identity.

    The same event delivered twice gives the same name (so the create is a 409, a duplicate);
    another version of the same key gives another name. *attempt* > 0 gives the alternative
    names the receiver moves to when the name is held by a different object (a collision).
    """
    parts = [ref.bucket, ref.key, ref.identity()] + ([f"attempt-{attempt}"] if attempt else [])
    raw_digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).digest()
    digest = base64.b32encode(raw_digest).decode("ascii").lower()[:HASH_LENGTH]
    base_name = ref.key.rstrip("/").rsplit("/", 1)[-1]
    slug = slugify(base_name, MAX_NAME_LENGTH - HASH_LENGTH - 1)
    if not slug or not slug[0].isalpha():
        slug = ("cj-" + slug)[: MAX_NAME_LENGTH - HASH_LENGTH - 1].strip("-")
    return f"{slug}-{digest}"


def label_value(text: str) -> str | None:
    """*text* if it is a valid label value (bucket names are, but for a few legacy ones), else None."""
    return text if _LABEL_VALUE.match(text) else None


def _field(body: object, name: str) -> Any:
    """*body*[*name*] when *body* is a mapping, else None."""
    return body.get(name) if isinstance(body, Mapping) else None


def wanted_labels(crawljob: Mapping[str, Any]) -> dict[str, str | None]:
    """The phase and bucket labels *crawljob* should carry (None: remove), from its spec and status."""
    # A hand-written spec may hold anything: what is not a mapping has no bucket (specs.py fails it).
    bucket = str(_field(_field(_field(crawljob, "spec"), "source"), "bucket") or "")
    phase = str(_field(_field(crawljob, "status"), "phase") or "")
    return {LABEL_PHASE: label_value(phase) or None, LABEL_BUCKET: label_value(bucket) or None}


def labels_patch(crawljob: Mapping[str, Any]) -> dict[str, str | None]:
    """The merge patch of metadata.labels that brings the phase and bucket labels in sync ({} if they are)."""
    labels = _field(_field(crawljob, "metadata"), "labels")
    current = labels if isinstance(labels, Mapping) else {}
    return {key: value for key, value in wanted_labels(crawljob).items() if current.get(key) != value}


def crawljob_manifest(
    ref: ObjectRef,
    namespace: str,
    raw_key: str | None = None,
    labels: dict[str, str] | None = None,
    attempt: int = 0,
) -> dict[str, object]:
    """The CrawlJob body the receiver creates for one object (spec defaults are the operator's)."""
    source: dict[str, object] = {"bucket": ref.bucket, "key": ref.key}
    if ref.version_id:
        source["versionId"] = ref.version_id
    if ref.etag:
        source["eTag"] = ref.etag.strip('"')
    if ref.size is not None:
        source["size"] = ref.size
    if ref.sequencer:
        source["sequencer"] = ref.sequencer
    if ref.event_time:
        source["eventTime"] = ref.event_time
    annotations = {ANNOTATION_RAW_KEY: raw_key} if raw_key is not None and raw_key != ref.key else {}
    metadata: dict[str, object] = {
        "name": crawljob_name(ref, attempt),
        "namespace": namespace,
        "labels": {
            LABEL_NAME: "crawljob",
            **({LABEL_BUCKET: bucket_label} if (bucket_label := label_value(ref.bucket)) else {}),
            **(labels or {}),
        },
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": {"source": source}}


def same_object(source: object, ref: ObjectRef) -> bool:
    """Whether a stored CrawlJob's ``spec.source`` names the object version *ref* names."""
    if not isinstance(source, dict):
        return False
    stored = ObjectRef(
        bucket=str(source.get("bucket") or ""),
        key=str(source.get("key") or ""),
        version_id=_text_or_none(source.get("versionId")),
        etag=_text_or_none(source.get("eTag")),
        sequencer=_text_or_none(source.get("sequencer")),
    )
    return (stored.bucket, stored.key, stored.identity()) == (ref.bucket, ref.key, ref.identity())


def _text_or_none(value: object) -> str | None:
    return str(value) if value else None


def crd_path() -> Path:
    """Where the chart keeps the CRD: the single source of it (source tree or installed share/)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "charts" / "crawljob" / "crds" / "crawljobs.crawljob.io.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("charts/crawljob/crds/crawljobs.crawljob.io.yaml not found above " + str(here))
