"""A generated IoT-style CSV (like an AWS IoT Analytics export) of a chosen size and known row count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = (
    "timestamp",
    "device_id",
    "site",
    "sensor_type",
    "status",
    "temperature",
    "humidity",
    "pressure",
    "battery",
    "note",
)
_SITES = np.array(["berlin-1", "dublin-2", "ohio-3", "tokyo-4", "sydney-5"])
_SENSORS = np.array(["thermo", "hygro", "baro", "multi"])
_STATUSES = np.array(["ok", "ok", "ok", "warn", "error"])
_NOTES = np.array(
    ["routine reading", "calibrated, stable", "door open, fan on", "low battery, replace soon", ""]
)
_ROWS_PER_CHUNK = 50_000


@dataclass(frozen=True)
class SampleFile:
    """What was generated: where, how many data rows, how many bytes."""

    path: Path
    rows: int
    size: int


def _chunk(rng: np.random.Generator, start_row: int, rows: int) -> pd.DataFrame:
    base = np.datetime64("2026-11-01T00:00:00")
    seconds = (start_row + np.arange(rows)) * 2
    return pd.DataFrame(
        {
            "timestamp": np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s"),
            "device_id": np.char.add("dev-", rng.integers(0, 5000, rows).astype(str)),
            "site": rng.choice(_SITES, rows),
            "sensor_type": rng.choice(_SENSORS, rows),
            "status": rng.choice(_STATUSES, rows),
            "temperature": np.round(rng.normal(21.5, 4.0, rows), 3),
            "humidity": np.round(rng.uniform(10, 90, rows), 2),
            "pressure": np.round(rng.normal(1013.0, 8.0, rows), 2),
            "battery": rng.integers(0, 101, rows),
            "note": rng.choice(_NOTES, rows),
        },
        columns=list(COLUMNS),
    )


def generate_csv(path: Path, size_bytes: int, seed: int = 7) -> SampleFile:
    """Write a header + rows until the file reaches *size_bytes* (at least one row); count the rows."""
    rng = np.random.default_rng(seed)
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(COLUMNS) + "\n")
        while True:
            frame = _chunk(rng, rows, _ROWS_PER_CHUNK)
            text = frame.to_csv(index=False, header=False, lineterminator="\n")
            remaining = size_bytes - handle.tell()
            if len(text) > remaining:
                lines = text.splitlines(keepends=True)
                taken = 0
                for line in lines:
                    if remaining - len(line) < 0 and rows + taken > 0:
                        break
                    handle.write(line)
                    remaining -= len(line)
                    taken += 1
                rows += taken
                break
            handle.write(text)
            rows += len(frame)
            if handle.tell() >= size_bytes:
                break
    return SampleFile(path=path, rows=rows, size=path.stat().st_size)
