"""The worker's contract with the operator (docs/contracts.md): exit codes, where the termination
message goes and which fields it carries.

The operator imports this module (and only this one) from the worker package: it must stay free of
dependencies (standard library only) so that importing it costs the operator nothing.
"""

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


# Bad input or configuration: running the worker again cannot help (the Job fails at once).
PERMANENT_EXIT_CODES = (
    ExitCode.INVALID_ARGUMENTS,
    ExitCode.BAD_INPUT,
    ExitCode.SOURCE_UNAVAILABLE,
    ExitCode.REJECT_THRESHOLD_EXCEEDED,
    ExitCode.OUTPUT_FORBIDDEN,
)

# Kubernetes' terminationMessagePath default; the worker writes its JSON summary there.
TERMINATION_LOG = "/dev/termination-log"
# What the crawl produced: the operator copies these into the CrawlJob's status.result.
RESULT_KEYS = (
    "rowsRead",
    "rowsWritten",
    "rowsRejected",
    "bytesRead",
    "outputUri",
    "outputObjects",
    "rejectsUri",
    "manifestUri",
    "durationSeconds",
)
# The termination message: one JSON object with these keys, in this order.
SUMMARY_KEYS = ("outcome", "exitCode", "reason", "message", *RESULT_KEYS)
# A sharded run adds {"index": I, "count": N, "finalized": bool} under this key: the pod that finalized
# carries the whole object's result; the others their shard's.
SHARD_KEY = "shard"
# The most shards one object can be split into: the Indexed Job's own limit of completions (the
# operator caps spec.shards by it, and the worker refuses more).
MAX_SHARDS = 100_000
