"""Termination message, progress patch, settings, locations and exit-code decisions (pure)."""

import io
import json
from pathlib import Path

import pytest

from crawljob_worker.errors import WorkerError
from crawljob_worker.kubeapi import kube_target
from crawljob_worker.report import Progress, percent, progress_patch, termination_message
from crawljob_worker.run import reject_threshold_error
from crawljob_worker.settings import settings_from_args
from crawljob_worker.source import detect_compression
from crawljob_worker.uri import parse_location


def test_termination_message_fits_in_4_kib_and_stays_json() -> None:
    summary = {"outcome": "Failed", "exitCode": 3, "reason": "BadInput", "message": "é" * 5000, "rowsRead": 1}
    text = termination_message(summary)
    assert len(text.encode("utf-8")) <= 4096
    decoded = json.loads(text)
    assert decoded["reason"] == "BadInput"
    assert decoded["rowsRead"] == 1
    assert decoded["message"].endswith("…")


def test_progress_patch_shape() -> None:
    patch = progress_patch(42, 100, 7, "2026-01-01T00:00:00Z")
    assert patch == {
        "status": {
            "progress": {
                "bytesRead": 42,
                "bytesTotal": 100,
                "rowsRead": 7,
                "percent": "42%",
                "updateTime": "2026-01-01T00:00:00Z",
            }
        }
    }
    assert percent(1, 3) == "33%"
    assert percent(0, 0) == "100%"


def test_kube_target_prefers_the_given_server_and_needs_a_name(tmp_path: Path) -> None:
    assert kube_target(None, "ns", "http://api", {}) is None
    target = kube_target("cj", None, "http://api/", {})
    assert target is not None
    assert (target.server, target.namespace, target.name) == ("http://api", "default", "cj")
    (tmp_path / "token").write_text("t")
    (tmp_path / "namespace").write_text("jobs\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    in_cluster = kube_target("cj", None, None, env, service_account_dir=str(tmp_path))
    assert in_cluster is not None
    assert (in_cluster.server, in_cluster.namespace) == (None, "jobs")
    assert (in_cluster.service_host, in_cluster.service_port) == ("10.0.0.1", "443")
    assert in_cluster.service_account_dir == str(tmp_path)


def test_flags_win_over_env_and_env_fills_the_rest() -> None:
    env = {"CRAWLJOB_OUTPUT": "s3://b/out/", "CRAWLJOB_MAX_REJECT_RATIO": "0.5", "CRAWLJOB_DELIMITER": ";"}
    settings = settings_from_args(["data.csv", "--delimiter", "\\t", "--dtypes", '{"a": "int32"}'], env)
    assert (settings.output, settings.max_reject_ratio, settings.delimiter) == ("s3://b/out/", 0.5, "\t")
    assert str(settings.dtypes["a"]) == "int32"
    assert (settings.s3_connections, settings.s3_range_bytes) == (1, 8 * 1024 * 1024)
    ranged = settings_from_args(
        ["x.csv"], {**env, "CRAWLJOB_S3_CONNECTIONS": "6", "CRAWLJOB_S3_RANGE_MB": "16"}
    )
    assert (ranged.s3_connections, ranged.s3_range_bytes) == (6, 16 * 1024 * 1024)
    indexed = {**env, "CRAWLJOB_RUN_ID": "0f3e-uid.2_b", "JOB_COMPLETION_INDEX": "2"}  # an Indexed Job's pod
    sharded = settings_from_args(["x.csv", "--shards", "3"], indexed)
    assert (sharded.shards, sharded.shard_index, sharded.run_id) == (3, 2, "0f3e-uid.2_b")
    assert settings_from_args(["x.csv", "--shards", "3", "--shard-index", "1"], indexed).shard_index == 1
    assert settings_from_args(["x.csv"], env).run_id is None  # optional for one shard


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["x.csv"], "--output"),
        (["x.csv", "--output", "o", "--max-reject-ratio", "2"], "between 0 and 1"),
        (["x.csv", "--output", "o", "--dtypes", "{bad"], "not valid JSON"),
        (["x.csv", "--output", "o", "--encoding", "utf-16"], "ASCII-compatible"),
        (["x.csv", "--output", "o", "--format", "xlsx"], "invalid choice"),
        (["x.csv", "--output", "o", "--delimiter", ",,"], "one character"),
        (["x.csv", "--output", "o", "--s3-connections", "0"], "--s3-connections"),
        (["x.csv", "--output", "o", "--s3-connections", "33"], "at most 32"),
        (["x.csv", "--output", "o", "--s3-connections", "2.5"], "--s3-connections"),
        (
            ["x.csv", "--output", "o", "--shards", "2", "--shard-index", "0"],
            "--run-id is required with --shards",
        ),
        (
            ["x.csv", "--output", "o", "--shards", "2", "--shard-index", "1", "--run-id", "../up"],
            "--run-id must be",
        ),
        # Without an index every pod would convert shard 0.
        (["x.csv", "--output", "o", "--shards", "2", "--run-id", "r"], "needs the shard's index"),
        # More than an Indexed Job can have: refused at once, not a loop over 10^20 shard reports.
        (["x.csv", "--output", "o", "--shards", "1" + "0" * 20, "--shard-index", "0"], "at most 100000"),
        (["x.csv", "--output", "o", "--shards", "100001", "--shard-index", "0"], "at most 100000"),
        (["x.csv", "--output", "o", "--run-id", "a b"], "--run-id must be"),
        (["x.csv", "--output", "o", "--run-id", "x" * 129], "--run-id must be"),
    ],
)
def test_bad_arguments_name_the_problem(argv: list[str], fragment: str) -> None:
    with pytest.raises(WorkerError) as caught:
        settings_from_args(argv, {})
    assert caught.value.code == 2
    assert fragment in caught.value.message


def test_compression_detection() -> None:
    assert detect_compression(b"\x1f\x8b\x08", "x.csv", "auto") == "gzip"
    assert detect_compression(b"a,b\n", "x.csv.gz", "auto") == "none"
    assert detect_compression(b"a,b\n", "x.csv", "auto") == "none"
    for head in (b"PK\x03\x04", b"PAR1", b"BZh9"):
        with pytest.raises(WorkerError) as caught:
            detect_compression(head, "x.csv", "auto")
        assert caught.value.code == 3
    with pytest.raises(WorkerError):
        detect_compression(b"a,b", "x.csv", "gzip")


def test_locations() -> None:
    assert parse_location("s3://bucket/a/b.csv", what="SOURCE").bucket == "bucket"
    assert parse_location("s3://bucket/a/b.csv", what="SOURCE").path == "a/b.csv"
    assert parse_location("file:///tmp/x%20y.csv", what="SOURCE").path == "/tmp/x y.csv"
    assert parse_location("out", what="--output").child("part-00000.parquet").path == "out/part-00000.parquet"
    with pytest.raises(WorkerError):
        parse_location("gs://b/k", what="SOURCE")


def test_reject_threshold() -> None:
    assert reject_threshold_error(1, 100, 0.01, "u") is None
    error = reject_threshold_error(2, 100, 0.01, "s3://b/out/_rejects.csv")
    assert error is not None
    assert error.code == 5
    assert "_rejects.csv" in error.message


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_redrawn_progress_bar_throttled_to_the_interval() -> None:
    now = [0.0]
    screen = _Terminal()
    progress = Progress(1000, 5.0, None, stream=screen, clock=lambda: now[0])
    now[0] = 1.0
    progress.update(250, 10)  # first report: shown at once
    now[0] = 2.0
    progress.update(400, 20)  # within the interval: skipped
    now[0] = 7.0
    progress.update(500, 30)
    now[0] = 8.0
    progress.update(1000, 60, final=True)  # the final one is always shown, and ends the line
    frames = screen.getvalue().split("\r")[1:]
    assert [frame.split("]")[0] for frame in frames] == [
        "[#####...............",
        "[##########..........",
        "[####################",
    ]
    assert frames[0].startswith("[#####...............]  25%")
    assert "60 rows" in frames[-1]
    assert frames[-1].endswith("\n") and not any(frame.endswith("\n") for frame in frames[:-1])
