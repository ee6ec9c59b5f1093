"""Exit codes and the one exception type that carries them (docs/contracts.md, "Exit codes")."""

from __future__ import annotations

from crawljob_worker.contract import ExitCode as ExitCode  # the worker raises it from here


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
