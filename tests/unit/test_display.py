import datetime

from crawljob.local.display import render_result, render_table

NOW = datetime.datetime(2026, 11, 29, 12, 0, 0, tzinfo=datetime.UTC)


def _crawljob(name: str, created: str, status: dict[str, object]) -> dict[str, object]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"source": {"bucket": "inbox", "key": f"{name}.csv"}},
        "status": status,
    }


def test_table_has_the_printer_columns_oldest_first() -> None:
    table = render_table(
        [
            _crawljob("b", "2026-11-29T11:59:30Z", {"phase": "Running", "progress": {"percent": "40%"}}),
            _crawljob(
                "a",
                "2026-11-29T10:00:00Z",
                {"phase": "Succeeded", "reason": "Completed", "result": {"rowsWritten": 7}},
            ),
        ],
        NOW,
    )
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "BUCKET", "KEY", "PHASE", "PROGRESS", "ROWS", "REASON", "AGE"]
    assert lines[1].split() == ["a", "inbox", "a.csv", "Succeeded", "7", "Completed", "2h"]
    assert lines[2].split() == ["b", "inbox", "b.csv", "Running", "40%", "30s"]


def test_result_lists_counts_and_message() -> None:
    text = render_result(
        _crawljob("a", "", {"phase": "Failed", "message": "source missing", "result": {"rowsRead": 0}})
    )
    assert "CrawlJob a: Failed" in text
    assert "source missing" in text
    assert "rows read:" in text
