"""Is a CrawlJob's spec one the Job builder can use? (pure: no I/O)

The API server checks the CRD's schema, but CrawlJobs are hand-made too and not every server (nor
the emulator) enforces it: every field `jobs.build_job` reads is checked here first, so a bad one
fails its CrawlJob (reason `InvalidSpec`, the message naming the field) instead of raising inside
the loop that creates every CrawlJob's Job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OUTPUT_FORMATS = ("parquet", "csv", "jsonl")
COMPRESSIONS = ("auto", "gzip", "none")
MAX_SHARDS = 1000  # the CRD's maximum of spec.shards (the operator's --max-shards caps it further)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _text(spec: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> str | None:
    value = spec.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        return f"{where}.{name} must be a non-empty string, got {_kind(value)}"
    if "\0" in value:
        return f"{where}.{name} must not contain NUL"
    return None


def _integer(spec: Mapping[str, Any], name: str, minimum: int, maximum: int = 2**31 - 1) -> str | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        return f"spec.{name} must be an integer from {minimum} to {maximum}, got {str(value)[:40]!r}"
    return None


def _source(spec: Mapping[str, Any]) -> str | None:
    source = spec.get("source")
    if not isinstance(source, Mapping):
        return f"spec.source must be an object {{bucket, key}}, got {_kind(source)}"
    for name in ("bucket", "key"):
        problem = _text(source, name, "spec.source", required=True)
        if problem:
            return problem
    problem = _text(source, "versionId", "spec.source")
    if problem:
        return problem
    size = source.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**63):
        return f"spec.source.size must be a byte count from 0 to {2**63 - 1}, got {str(size)[:40]!r}"
    return None


def _output(spec: Mapping[str, Any]) -> str | None:
    output = spec.get("output")
    if output is None:
        return None
    if not isinstance(output, Mapping):
        return f"spec.output must be an object {{uri, format}}, got {_kind(output)}"
    problem = _text(output, "uri", "spec.output")
    if problem:
        return problem
    uri = output.get("uri")
    if uri and not (str(uri).startswith("s3://") and len(str(uri)) > len("s3://") and str(uri)[5] != "/"):
        return f"spec.output.uri must look like s3://bucket/prefix/, got {str(uri)[:80]!r}"
    if output.get("format") is not None and output.get("format") not in OUTPUT_FORMATS:
        return f"spec.output.format must be one of {', '.join(OUTPUT_FORMATS)}"
    return None


def _csv(spec: Mapping[str, Any]) -> str | None:
    csv = spec.get("csv")
    if csv is None:
        return None
    if not isinstance(csv, Mapping):
        return f"spec.csv must be an object, got {_kind(csv)}"
    for name in ("delimiter", "encoding"):
        problem = _text(csv, name, "spec.csv")
        if problem:
            return problem
    if csv.get("header") is not None and not isinstance(csv.get("header"), bool):
        return f"spec.csv.header must be a boolean, got {_kind(csv.get('header'))}"
    if csv.get("compression") is not None and csv.get("compression") not in COMPRESSIONS:
        return f"spec.csv.compression must be one of {', '.join(COMPRESSIONS)}"
    if csv.get("dtypes") is not None and not isinstance(csv.get("dtypes"), Mapping):
        return f"spec.csv.dtypes must be an object of column: type, got {_kind(csv.get('dtypes'))}"
    return None


def _template(spec: Mapping[str, Any]) -> str | None:
    template = spec.get("jobTemplate")
    if template is None:
        return None
    if not isinstance(template, Mapping):
        return f"spec.jobTemplate must be an object, got {_kind(template)}"
    for name in ("image", "serviceAccountName"):
        problem = _text(template, name, "spec.jobTemplate")
        if problem:
            return problem
    for name in ("resources", "nodeSelector"):
        if template.get(name) is not None and not isinstance(template.get(name), Mapping):
            return f"spec.jobTemplate.{name} must be an object, got {_kind(template.get(name))}"
    for name in ("env", "tolerations"):
        items = template.get(name)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
            return f"spec.jobTemplate.{name} must be a list of objects, got {_kind(items)}"
    return None


def spec_problem(spec: Any) -> str | None:
    """What is wrong with *spec* for building its Job (naming the field), or None."""
    if not isinstance(spec, Mapping):
        return f"spec must be an object, got {_kind(spec)}"
    for check in (_source, _output, _csv, _template):
        problem = check(spec)
        if problem:
            return problem
    ratio = spec.get("maxRejectRatio")
    if ratio is not None and (
        isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1
    ):
        return f"spec.maxRejectRatio must be a number from 0 to 1, got {str(ratio)[:40]!r}"
    return (
        _integer(spec, "backoffLimit", 0)
        or _integer(spec, "activeDeadlineSeconds", 1)
        or _integer(spec, "shards", 1, maximum=MAX_SHARDS)
        or _integer(spec, "shardSizeMb", 1)
    )
