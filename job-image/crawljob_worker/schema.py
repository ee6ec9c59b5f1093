"""Column types: the `--dtypes` spelling, and keeping inferred types stable across chunks (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pyarrow as pa

from crawljob_worker.errors import invalid_arguments

_SIMPLE: dict[str, pa.DataType] = {
    **dict.fromkeys(["string", "str", "object", "utf8", "text"], pa.string()),
    **dict.fromkeys(["int", "int64", "integer", "long"], pa.int64()),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    **dict.fromkeys(["float", "float64", "double"], pa.float64()),
    "float32": pa.float32(),
    **dict.fromkeys(["bool", "boolean"], pa.bool_()),
    **dict.fromkeys(["date", "date32"], pa.date32()),
    **dict.fromkeys(["timestamp", "datetime", "datetime64"], pa.timestamp("us")),
}
_TIMESTAMP = re.compile(r"^(?:timestamp|datetime64)\[(s|ms|us|ns)(?:,\s*(?:tz=)?([^\]]+))?\]$")


def parse_type(spelling: str) -> pa.DataType:
    """`int64`, `float`, `string`, `bool`, `date`, `timestamp`, `timestamp[ms, UTC]`, ... as an Arrow type."""
    text = spelling.strip()
    found = _SIMPLE.get(text.lower())
    if found is not None:
        return found
    match = _TIMESTAMP.match(text.lower().replace("utc", "UTC"))
    if match:
        unit, zone = match.groups()
        return pa.timestamp(unit, tz=zone.strip() if zone else None)
    known = ", ".join(sorted(_SIMPLE)) + ", timestamp[unit] or timestamp[unit, tz]"
    raise invalid_arguments(f"unknown column type {spelling!r}; use one of {known}")


def parse_dtypes(spec: Mapping[str, str] | None) -> dict[str, pa.DataType]:
    """The `--dtypes` JSON object (column name → type spelling) as Arrow types."""
    return {str(name): parse_type(str(kind)) for name, kind in (spec or {}).items()}


def check_dtypes_cover(dtypes: Mapping[str, pa.DataType], names: Sequence[str]) -> None:
    """Every explicitly typed column must exist: a typo must not silently type nothing."""
    missing = [name for name in dtypes if name not in names]
    if missing:
        raise invalid_arguments(
            f"--dtypes names column(s) {', '.join(map(repr, missing))} that the file lacks "
            f"(columns: {', '.join(names)})"
        )


def stable_type(inferred: pa.DataType) -> pa.DataType:
    """The type to keep for a column inferred from the first chunk.

    All-null columns become strings, and timestamps get at least microsecond precision, so a later
    chunk with a value or a fraction of a second does not fail to fit the type of the first chunk.
    """
    if pa.types.is_null(inferred):
        return pa.string()
    if pa.types.is_timestamp(inferred) and inferred.unit in ("s", "ms"):
        return pa.timestamp("us", tz=inferred.tz)
    return inferred


def unique_names(raw: Sequence[str]) -> list[str]:
    """Header names made unique and non-empty (`a, a, ""` → `a, a_2, column_3`)."""
    names: list[str] = []
    seen: set[str] = set()
    for index, name in enumerate(raw, start=1):
        candidate = name.strip() or f"column_{index}"
        base, suffix = candidate, 2
        while candidate in seen:
            candidate = f"{base}_{suffix}"
            suffix += 1
        seen.add(candidate)
        names.append(candidate)
    return names


def generated_names(count: int) -> list[str]:
    """Names for a file without a header: column_1 … column_N."""
    return [f"column_{index}" for index in range(1, count + 1)]
