"""Per-column statistics for the manifest: null counts, min and max, accumulated chunk by chunk."""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def _orderable(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_temporal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_boolean(kind)
    )


def _text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def json_value(value: Any) -> Any:
    """A min/max value as JSON: numbers and strings as they are, times in ISO 8601."""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, float) and value != value:
        return None
    return value


@dataclass
class ColumnStats:
    null_count: int = 0
    minimum: Any = None
    maximum: Any = None


@dataclass
class TableStats:
    """Running statistics over every table written."""

    columns: dict[str, ColumnStats] = field(default_factory=dict)

    def add(self, table: pa.Table, text_min_max: bool = True) -> None:
        """Null counts of every column; min and max of the orderable ones, of text columns only
        with *text_min_max* (comparing every string costs ~0.3 CPU-s per 400 MB)."""
        for name, column in zip(table.column_names, table.columns, strict=True):
            stats = self.columns.setdefault(name, ColumnStats())
            stats.null_count += column.null_count
            if not _orderable(column.type) or column.null_count == len(column):
                continue
            if not text_min_max and _text(column.type):
                continue
            found = pc.min_max(column)
            low, high = found["min"].as_py(), found["max"].as_py()
            if low is not None and (stats.minimum is None or low < stats.minimum):
                stats.minimum = low
            if high is not None and (stats.maximum is None or high > stats.maximum):
                stats.maximum = high

    def add_nulls(self, table: pa.Table, names: list[str]) -> None:
        """Null counts of the columns *names* (known to Arrow, free): for Parquet columns written
        without statistics, whose footer has none."""
        for name in table.column_names:  # the manifest lists columns in the table's order
            self.columns.setdefault(name, ColumnStats())
        for name in names:
            self.columns[name].null_count += table.column(name).null_count

    def add_parquet(self, metadata: Any) -> None:
        """Merge the statistics Parquet already computed for each row group (no second pass)."""
        for group_index in range(metadata.num_row_groups):
            group = metadata.row_group(group_index)
            for column_index in range(group.num_columns):
                chunk = group.column(column_index)
                stats = self.columns.setdefault(chunk.path_in_schema, ColumnStats())
                found = chunk.statistics
                if found is None:
                    continue
                stats.null_count += found.null_count or 0
                if found.has_min_max:
                    low, high = found.min, found.max
                    if stats.minimum is None or low < stats.minimum:
                        stats.minimum = low
                    if stats.maximum is None or high > stats.maximum:
                        stats.maximum = high

    def as_json(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "nullCount": stats.null_count,
                "min": json_value(stats.minimum),
                "max": json_value(stats.maximum),
            }
            for name, stats in self.columns.items()
        }
