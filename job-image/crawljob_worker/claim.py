"""Finalize a sharded run exactly once: the shard that finds every report claims the finalize by
creating a per-run claim object under the output prefix, only if it does not exist yet (an S3
conditional write, `If-None-Match: *`; a local exclusive create). docs/worker.md, "Shards".

Two shards that finish together both find every report; one creates the claim, the other is told
it exists (S3: 412 PreconditionFailed) and leaves the finalize to it. A retry of the *claiming*
shard index (its pod died mid-finalize, and Kubernetes retries that index) finds its own index in
the claim and finalizes again. A store without conditional writes (501 NotImplemented) gives the
old behaviour: every shard that finds all reports finalizes (they write the same documents).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from crawljob_worker.sink import client_error, output_error, read_object
from crawljob_worker.source import error_code, network_errors
from crawljob_worker.uri import Location

log = logging.getLogger("crawljob_worker.claim")

# S3 answers a conditional write racing another one on the same key with 409: try again.
CONFLICT_RETRIES = 5
# What a store says when it does not implement `If-None-Match` on PUT.
UNSUPPORTED_CODES = frozenset({"NotImplemented"})


def claim_name(run_id: str) -> str:
    """The claim object of run *run_id*, directly under the output prefix."""
    return f"_finalize-{run_id}.json"


class Outcome(Enum):
    CLAIMED = "claimed"  # this shard created the claim: it finalizes
    TAKEN_OVER = "takenOver"  # the claim names this shard's index: a retry of the claimer finalizes
    LOST = "lost"  # another shard index holds the claim: it finalizes, this shard does not
    UNSUPPORTED = "unsupported"  # the store cannot create only-if-absent: finalize (old behaviour)

    @property
    def finalizes(self) -> bool:
        return self is not Outcome.LOST


@dataclass(frozen=True)
class Claim:
    outcome: Outcome
    holder: int | None  # the shard index named in the claim (None: unknown)


def claim_body(run_id: str, index: int, now: float) -> bytes:
    """The claim object's content (pure)."""
    claimed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return json.dumps({"runId": run_id, "shardIndex": index, "claimedAt": claimed_at}).encode()


def holder_of(data: bytes | None) -> int | None:
    """The shard index an existing claim names, or None if it cannot be read (pure)."""
    try:
        value = json.loads(data or b"").get("shardIndex")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def decide(holder: int | None, index: int) -> Claim:
    """What shard *index* does when the claim already exists and names *holder* (pure)."""
    return Claim(Outcome.TAKEN_OVER if holder == index else Outcome.LOST, holder)


def claim_finalize(client: Any, location: Location, run_id: str, index: int) -> Claim:
    """Claim the finalize of run *run_id* for shard *index* under the output prefix *location*."""
    body = claim_body(run_id, index, time.time())
    target = location.child(claim_name(run_id))
    if not location.is_s3:
        return _claim_local(Path(target.path), body, index)
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            client.put_object(Bucket=target.bucket, Key=target.path, Body=body, IfNoneMatch="*")
            return Claim(Outcome.CLAIMED, index)
        except client_error() as error:
            code = error_code(error)
            status = _status(error)
            if code == "PreconditionFailed" or status == 412:
                return decide(holder_of(read_object(client, target)), index)
            if code in UNSUPPORTED_CODES or status == 501:
                log.warning(
                    "the output store does not implement conditional writes (%s): shard %d finalizes "
                    "without a claim; shards finishing together may each finalize (same documents)",
                    code,
                    index,
                )
                return Claim(Outcome.UNSUPPORTED, None)
            if (code == "ConditionalRequestConflict" or status == 409) and attempt < CONFLICT_RETRIES:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise output_error(error, target.uri()) from error
        except network_errors() as error:
            raise output_error(error, target.uri()) from error
    raise AssertionError("unreachable")  # the last attempt returns or raises


def _status(error: Exception) -> int:
    response = getattr(error, "response", None)
    metadata = response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}
    return int(metadata.get("HTTPStatusCode") or 0)


def _claim_local(path: Path, body: bytes, index: int) -> Claim:
    """An exclusive create whose content is whole when it appears: a hard link of a complete
    temporary file fails if the name exists (where `open(path, "x")` would show an empty file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-claim-", delete=False) as handle:
        handle.write(body)
    try:
        os.link(handle.name, path)
        return Claim(Outcome.CLAIMED, index)
    except FileExistsError:
        return decide(holder_of(path.read_bytes()), index)
    except OSError as error:
        raise output_error(error, str(path)) from error
    finally:
        Path(handle.name).unlink(missing_ok=True)
