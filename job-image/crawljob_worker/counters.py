"""What a run did so far, for the termination message (kept apart from `run`, which imports pandas)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Counters:
    """What the run did so far: the termination message reports it on success and on failure."""

    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    bytes_read: int = 0
    output_uri: str | None = None
    output_objects: int = 0
    rejects_uri: str | None = None
    manifest_uri: str | None = None
    shard: dict[str, Any] | None = None  # sharded runs: index, count, finalized (contract.SHARD_KEY)

    def as_json(self) -> dict[str, Any]:
        return {
            "rowsRead": self.rows_read,
            "rowsWritten": self.rows_written,
            "rowsRejected": self.rows_rejected,
            "bytesRead": self.bytes_read,
            "outputUri": self.output_uri,
            "outputObjects": self.output_objects,
            "rejectsUri": self.rejects_uri,
            "manifestUri": self.manifest_uri,
        }
