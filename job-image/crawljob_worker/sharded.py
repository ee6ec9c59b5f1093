"""A sharded run (`--shards N --shard-index I`): convert one shard, then, if every shard is done,
finalize: check the speculation chain, re-run a shard that assumed the wrong quote state, and write
the one `_manifest.json` and `_rejects.csv` of the whole object (docs/worker.md, "Shards").

Shard I writes its parts under `<output>/shard-0000I/` and, last, `shard-0000I/_shard.json` (its
edges, counts and the run id). Only reports of this run (`--run-id`) count: an earlier run's reports
under the same prefix are ignored. S3 is read-after-write consistent, so the last shard to write its
report always finds all N; every shard that finds them claims the finalize (`claim.py`), and only
the one that creates the claim (or a retry of its index) finalizes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from crawljob_worker.claim import Outcome, claim_finalize, claim_name
from crawljob_worker.counters import Counters
from crawljob_worker.errors import ExitCode, WorkerError, bad_input
from crawljob_worker.kubeapi import StatusWriter, kube_target
from crawljob_worker.opening import SourceStream
from crawljob_worker.pipeline import Pending
from crawljob_worker.report import now_iso
from crawljob_worker.run import reject_threshold_error, run
from crawljob_worker.settings import Settings
from crawljob_worker.shard import (
    ShardCutter,
    ShardEdges,
    ShardPlan,
    first_mismatch,
    global_line,
    line_bases,
    refusal,
)
from crawljob_worker.shardprogress import ShardStatus
from crawljob_worker.shardstream import ObjectAccess, ShardStream
from crawljob_worker.sink import (
    MANIFEST_NAME,
    REJECTS_NAME,
    LocalTarget,
    S3Target,
    Target,
    manifest_bytes,
    read_object,
    remove_stale,
    remove_stale_shards,
)
from crawljob_worker.source import s3_client
from crawljob_worker.uri import Location, parse_location

log = logging.getLogger("crawljob_worker")
REPORT_NAME = "_shard.json"


def shard_prefix(index: int) -> str:
    return f"shard-{index:05d}/"


class Outputs:
    """The output prefix: targets for shard sub-prefixes, and reading back what shards wrote."""

    def __init__(self, client: Any, location: Location) -> None:
        self._client = client
        self.location = location if location.path.endswith("/") or not location.is_s3 else location.child("")
        self.top = self.target("")

    def target(self, prefix: str) -> Target:
        location = self.location.child(prefix) if prefix else self.location
        return S3Target(self._client, location) if location.is_s3 else LocalTarget(location.path)

    def read(self, name: str) -> bytes | None:
        """The object *name* under the prefix, or None if it does not exist."""
        return read_object(self._client, self.location.child(name))


def _shard_settings(settings: Settings, outputs: Outputs, index: int) -> Settings:
    """A shard converts like a 1-shard run into its own sub-prefix; the reject ratio is applied to the
    whole object at finalize; its progress goes through `shard_status`, not a whole-object patch."""
    return dataclasses.replace(
        settings,
        output=outputs.location.child(shard_prefix(index)).uri(),
        max_reject_ratio=1.0,
        crawljob_name=None,
    )


def convert_shard(
    settings: Settings,
    environ: Mapping[str, str],
    access: ObjectAccess,
    outputs: Outputs,
    header: bytes,
    index: int,
    *,
    assumed_in_quotes: bool | None,
    client: Any,
    report_progress: bool = True,
) -> dict[str, Any]:
    """Convert shard *index* and write its report; returns the report. *assumed_in_quotes* None
    speculates the quote state at the shard's scan point from its first bytes (a first run). The
    finalizer's re-run of a shard reports no progress (that shard's entry already says it read its
    range)."""
    plan = ShardPlan(access.size, settings.shards)
    quote = settings.quote.encode(settings.encoding) if settings.quote else None
    delimiter = settings.delimiter.encode(settings.encoding)
    cutter = ShardCutter(plan, index, quote, assumed_in_quotes=assumed_in_quotes, delimiter=delimiter)
    stream = ShardStream(
        access.open_from(plan.scan_from(index)), access.info, cutter, header if index > 0 else b""
    )
    counters = Counters()
    run(
        _shard_settings(settings, outputs, index),
        environ,
        counters,
        client=client,
        # A ShardStream has every attribute run() reads of a source (info, offset, reconnects, close).
        opening=cast("Pending[SourceStream]", Pending(lambda: stream, name="crawljob-shard-open")),
        status=shard_status(settings, environ, index, access.size) if report_progress else None,
    )
    edges = stream.edges()
    report = {"runId": settings.run_id, "edges": edges.to_json(), "counters": counters.as_json()}
    outputs.target(shard_prefix(index)).put_bytes(manifest_bytes(report), REPORT_NAME)
    log.info(
        "shard %d of %d: bytes [%d, %d), %d rows read",
        index,
        settings.shards,
        edges.start,
        edges.end,
        counters.rows_read,
    )
    return report


def shard_status(settings: Settings, environ: Mapping[str, str], index: int, size: int) -> ShardStatus | None:
    """Where shard *index* reports progress: its entry in the CrawlJob's status.progress, or nowhere
    outside a CrawlJob."""
    target = kube_target(settings.crawljob_name, settings.namespace, settings.kube_server, environ)
    if target is None:
        return None
    return ShardStatus(
        StatusWriter(target), index=index, run_id=settings.run_id, bytes_total=size, now=now_iso
    )


def run_sharded(
    settings: Settings,
    environ: Mapping[str, str],
    counters: Counters,
    client: Any = None,
) -> None:
    """Convert shard `settings.shard_index`; finalize if it is the last to finish. Fills *counters*
    with the shard's counts, or the whole object's when this shard finalized."""
    started = time.time()
    counters.shard = {"index": settings.shard_index, "count": settings.shards, "finalized": False}
    source = settings.source_location()
    output = parse_location(settings.output, what="--output")
    if client is None and (source.is_s3 or output.is_s3):
        client = s3_client(connections=settings.s3_connections)
    outputs = Outputs(client, output)
    outputs.top.names()  # fail fast (exit 6) on a missing or unreadable output bucket
    access = ObjectAccess(client, source, version_id=settings.version_id, retries=settings.retries)
    reason = refusal(
        shards=settings.shards, compression=settings.compression, first_bytes=access.prefix()[:8]
    )
    if reason:
        raise bad_input(reason)
    quote = settings.quote.encode(settings.encoding) if settings.quote else None
    header = access.header(quote) if settings.header else b""
    index = settings.shard_index
    report = convert_shard(
        settings, environ, access, outputs, header, index, assumed_in_quotes=None, client=client
    )
    _fill(counters, report["counters"])
    reports = _reports(outputs, settings.shards, settings.run_id)
    if reports is None:
        log.info(
            "shard %d: not all %d shards of run %s are done; the last one finalizes",
            index,
            settings.shards,
            settings.run_id,
        )
        return
    claim = claim_finalize(client, outputs.location, str(settings.run_id), index)
    if not claim.outcome.finalizes:
        log.info("shard %d: every shard is done; shard %s claimed the finalize", index, claim.holder)
        return
    if claim.outcome is Outcome.TAKEN_OVER:
        log.warning("shard %d: finalizing again (this index claimed it; an earlier attempt ended)", index)
    try:
        finalize(
            settings, environ, access, outputs, header, reports, counters, client=client, started=started
        )
    finally:
        counters.shard["finalized"] = True


def _reports(outputs: Outputs, shards: int, run_id: str | None) -> dict[int, dict[str, Any]] | None:
    """Every shard's report of run *run_id*, or None while some shard has none (an earlier run's,
    under the same prefix, does not count). Cheap for the shards that are not last: one LIST of the
    shard prefixes first (a shard that wrote nothing yet has none), then the reports in index order
    up to the first missing one; only the last shard reads all N (before: every shard read N, so
    1,000 shards made ~10^6 GETs)."""
    present = outputs.top.prefixes()
    if any(shard_prefix(index) not in present for index in range(shards)):
        return None
    found: dict[int, dict[str, Any]] = {}
    for index in range(shards):
        data = outputs.read(shard_prefix(index) + REPORT_NAME)
        report = json.loads(data) if data is not None else None
        if not isinstance(report, dict) or report.get("runId") != run_id:
            return None
        found[index] = report
    return found


def _fill(counters: Counters, values: Mapping[str, Any]) -> None:
    counters.rows_read = int(values.get("rowsRead") or 0)
    counters.rows_written = int(values.get("rowsWritten") or 0)
    counters.rows_rejected = int(values.get("rowsRejected") or 0)
    counters.bytes_read = int(values.get("bytesRead") or 0)
    counters.output_uri = values.get("outputUri")
    counters.output_objects = int(values.get("outputObjects") or 0)
    counters.rejects_uri = values.get("rejectsUri")
    counters.manifest_uri = values.get("manifestUri")


def finalize(
    settings: Settings,
    environ: Mapping[str, str],
    access: ObjectAccess,
    outputs: Outputs,
    header: bytes,
    reports: dict[int, dict[str, Any]],
    counters: Counters,
    *,
    client: Any,
    started: float,
) -> None:
    """Every shard is done: make the chain agree, then write the whole object's rejects and manifest."""
    reruns: list[int] = []
    while True:
        edges = [ShardEdges.from_json(reports[index]["edges"]) for index in range(settings.shards)]
        mismatch = first_mismatch(edges)
        if mismatch is None:
            break
        index, state = mismatch
        if len(reruns) > settings.shards:  # each re-run fixes one shard for good: cannot happen
            raise WorkerError(
                ExitCode.CRASHED, "ShardChainUnsettled", f"shard re-runs did not settle: {reruns}"
            )
        log.warning(
            "shard %d assumed it started %s quotes, shard %d ended %s them: re-running shard %d",
            index,
            "inside" if not state else "outside",
            index - 1,
            "inside" if state else "outside",
            index,
        )
        reports[index] = convert_shard(
            settings,
            environ,
            access,
            outputs,
            header,
            index,
            assumed_in_quotes=state,
            client=client,
            report_progress=False,
        )
        reruns.append(index)
    manifests = [_manifest_of(outputs, index) for index in range(settings.shards)]
    schemas = {json.dumps(manifest.get("schema")) for manifest in manifests if manifest.get("rowsWritten")}
    bases = line_bases(edges)
    totals = Counters(output_uri=outputs.top.uri_of(""))
    for report in reports.values():
        values = report["counters"]
        totals.rows_read += int(values.get("rowsRead") or 0)
        totals.rows_written += int(values.get("rowsWritten") or 0)
        totals.rows_rejected += int(values.get("rowsRejected") or 0)
        totals.bytes_read += int(values.get("bytesRead") or 0)
        totals.output_objects += int(values.get("outputObjects") or 0)
    written = {MANIFEST_NAME, claim_name(str(settings.run_id))}
    if totals.rows_rejected:
        outputs.top.put_bytes(_global_rejects(settings, outputs, bases), REJECTS_NAME)
        totals.rejects_uri = outputs.top.uri_of(REJECTS_NAME)
        written.add(REJECTS_NAME)
    # Before the manifest: what earlier runs left and this run did not write goes (a 1-shard run's
    # parts and rejects, other runs' claims, shard prefixes beyond this run's N).
    remove_stale(outputs.top, written)
    remove_stale_shards(outputs.top, settings.shards)
    failure: WorkerError | None = None
    if len(schemas) > 1:
        failure = bad_input(
            "the shards inferred different column types ("
            + " vs ".join(sorted(schemas))
            + "); set csv.dtypes for those columns, or run with shards: 1"
        )
    failure = failure or reject_threshold_error(
        totals.rows_rejected, totals.rows_read, settings.max_reject_ratio, totals.rejects_uri
    )
    finished = time.time()
    manifest = {
        "manifestVersion": 1,
        "outcome": "Failed" if failure else "Succeeded",
        "runId": settings.run_id,
        "finalizedBy": settings.shard_index,
        "source": manifests[0].get("source"),
        "output": {**(manifests[0].get("output") or {}), "uri": totals.output_uri},
        "schema": manifests[0].get("schema"),
        "rowsRead": totals.rows_read,
        "rowsWritten": totals.rows_written,
        "rowsRejected": totals.rows_rejected,
        "bytesRead": totals.bytes_read,
        "resumes": sum(int(manifest.get("resumes") or 0) for manifest in manifests),
        "parts": [part for manifest in manifests for part in manifest.get("parts") or []],
        "rejects": {"uri": totals.rejects_uri, "rows": totals.rows_rejected} if totals.rejects_uri else None,
        "shards": [
            {
                **edges[index].to_json(),
                "lineBase": bases[index],
                "rowsRead": manifests[index].get("rowsRead"),
                "rowsWritten": manifests[index].get("rowsWritten"),
                "rowsRejected": manifests[index].get("rowsRejected"),
                "bytesRead": manifests[index].get("bytesRead"),
                "manifestUri": outputs.target(shard_prefix(index)).uri_of(MANIFEST_NAME),
                "rerun": index in reruns,
            }
            for index in range(settings.shards)
        ],
        "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
        "finalizeSeconds": round(finished - started, 3),
    }
    outputs.top.put_bytes(manifest_bytes(manifest), MANIFEST_NAME)
    totals.manifest_uri = outputs.top.uri_of(MANIFEST_NAME)
    _fill(counters, totals.as_json())
    if failure is not None:
        raise failure


def _manifest_of(outputs: Outputs, index: int) -> dict[str, Any]:
    data = outputs.read(shard_prefix(index) + MANIFEST_NAME)
    if data is None:
        raise WorkerError(
            ExitCode.TRANSIENT, "ShardOutputMissing", f"shard {index} reported done but has no manifest"
        )
    manifest: dict[str, Any] = json.loads(data)
    return manifest


def _global_rejects(settings: Settings, outputs: Outputs, bases: list[int]) -> bytes:
    """Every shard's rejects, their line numbers made the object's (line, shard, reason, record)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["line", "reason", "record"])
    for index, base in enumerate(bases):
        data = outputs.read(shard_prefix(index) + REJECTS_NAME)
        if data is None:
            continue
        rows = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        next(rows, None)
        for line, reason, record in rows:
            local = int(line)
            number = global_line(base, local, index=index, header_prepended=settings.header)
            writer.writerow([number, reason, record])
    return buffer.getvalue().encode("utf-8")
