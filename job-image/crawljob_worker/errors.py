"""Exit codes and the one exception type that carries them (docs/contracts.md, "Exit codes")."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What the operator maps to retry or give up; 2-6 are permanent, 75 is worth retrying."""

    SUCCEEDED = 0
    CRASHED = 1
    INVALID_ARGUMENTS = 2
    BAD_INPUT = 3
    SOURCE_UNAVAILABLE = 4
    REJECT_THRESHOLD_EXCEEDED = 5
    OUTPUT_FORBIDDEN = 6
    TRANSIENT = 75


class WorkerError(Exception):
    """A failure with its exit code, a CamelCase reason and a one-line message for the user."""

    def __init__(self, code: ExitCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def invalid_arguments(message: str) -> WorkerError:
    return WorkerError(ExitCode.INVALID_ARGUMENTS, "InvalidArguments", message)


def bad_input(message: str) -> WorkerError:
    return WorkerError(ExitCode.BAD_INPUT, "BadInput", message)


def source_not_found(message: str) -> WorkerError:
    return WorkerError(ExitCode.SOURCE_UNAVAILABLE, "SourceNotFound", message)


def source_forbidden(message: str) -> WorkerError:
    return WorkerError(ExitCode.SOURCE_UNAVAILABLE, "SourceForbidden", message)


def output_forbidden(message: str) -> WorkerError:
    return WorkerError(ExitCode.OUTPUT_FORBIDDEN, "OutputForbidden", message)


def transient(message: str) -> WorkerError:
    return WorkerError(ExitCode.TRANSIENT, "Transient", message)
