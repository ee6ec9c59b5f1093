"""A shard's status.progress patch (pure): its own entry, the sums over its run, the precondition."""

from typing import Any

from crawljob.operator.status import rerun_patch
from crawljob_worker.shardprogress import shard_progress_patch


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def stored(version: str, shards: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "cj", "resourceVersion": version},
        "status": {"phase": "Running"},
    }
    if shards is not None:
        body["status"]["progress"] = {"shards": shards}
    return body


def entry(run_id: str, bytes_read: int, rows: int) -> dict[str, Any]:
    return {"runId": run_id, "bytesRead": bytes_read, "rowsRead": rows, "updateTime": "t0"}


def test_the_first_shard_report_sums_its_own_entry_and_carries_the_resource_version() -> None:
    patch = shard_progress_patch(
        stored("7"), index=2, run_id="u-1", bytes_read=300, rows_read=30, bytes_total=1000, update_time="t1"
    )
    assert patch == {
        "metadata": {"resourceVersion": "7"},
        "status": {
            "progress": {
                "bytesRead": 300, "rowsRead": 30, "bytesTotal": 1000, "percent": "30%", "updateTime": "t1",
                "shards": {"2": {"runId": "u-1", "bytesRead": 300, "rowsRead": 30, "updateTime": "t1"}},
            }
        },
    }  # fmt: skip


def test_the_sums_cover_this_runs_shards_and_drop_an_earlier_runs_entries() -> None:
    current = stored(
        "9", {"0": entry("u-1", 400, 40), "1": entry("u-1", 100, 10), "3": entry("u-0", 999, 99)}
    )
    patch = shard_progress_patch(
        current, index=1, run_id="u-1", bytes_read=250, rows_read=25, bytes_total=1000, update_time="t2"
    )
    progress = patch["status"]["progress"]
    # Shard 1's new figure replaces its old one; run u-0's shard 3 is neither counted nor kept.
    assert (progress["bytesRead"], progress["rowsRead"], progress["percent"]) == (650, 65, "65%")
    assert progress["shards"] == {"1": entry("u-1", 250, 25) | {"updateTime": "t2"}, "3": None}
    after = merge(current, patch)
    assert set(after["status"]["progress"]["shards"]) == {"0", "1"}  # a merge patch never drops shard 0
    assert after["status"]["phase"] == "Running"


def test_overlapping_reads_never_show_more_than_the_whole_object() -> None:
    # Each shard reads one byte before its range and past its end to finish its last record.
    current = stored("3", {"0": entry("r", 501, 5)})
    patch = shard_progress_patch(
        current, index=1, run_id="r", bytes_read=502, rows_read=5, bytes_total=1000, update_time="t"
    )
    progress = patch["status"]["progress"]
    assert (progress["bytesRead"], progress["percent"]) == (1000, "100%")
    floor = shard_progress_patch(
        stored("4"), index=0, run_id="r", bytes_read=999, rows_read=1, bytes_total=1000, update_time="t"
    )
    assert floor["status"]["progress"]["percent"] == "99%"  # floor: 100% means done


def test_a_re_run_clears_every_shard_entry() -> None:
    current = stored("5", {"0": entry("u-1", 400, 40), "1": entry("u-1", 600, 60)})
    current["status"]["progress"].update(bytesRead=1000, percent="100%")
    after = merge(current, {"status": rerun_patch("again", 2)})
    assert "progress" not in after["status"]
