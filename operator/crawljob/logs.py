"""Logging for the receiver and the operator: one line per record, JSON or `key=value` text."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import Any

# Record attributes (set with ``extra=``) that become fields of the line, besides ``fields``.
EXTRA_FIELDS = ("crawljob", "namespace", "phase")


class LineFormatter(logging.Formatter):
    """A record's message plus its fields (``extra={"fields": {...}}`` or the EXTRA_FIELDS)."""

    def __init__(self, log_format: str) -> None:
        super().__init__()
        self.json = log_format == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}) or {})
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                fields.setdefault(name, value)
        message = record.getMessage()
        if self.json:
            line = {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
                **fields,
            }
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
            return json.dumps(line, default=str, ensure_ascii=False)
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        rest = " ".join(
            f"{key}={json.dumps(value, default=str, ensure_ascii=False)}" for key, value in fields.items()
        )
        return f"{self.formatTime(record)} {record.levelname} {record.name}: {message} {rest}".rstrip()


def configure_logging(log_format: str, quiet: Iterable[str] = ()) -> None:
    """Send logs to stderr, one line each; *quiet* loggers keep only warnings and errors."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
