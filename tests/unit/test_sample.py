from pathlib import Path

import pandas as pd

from crawljob.local.sample import COLUMNS, generate_csv


def test_generated_csv_has_the_size_and_row_count_it_reports(tmp_path: Path) -> None:
    sample = generate_csv(tmp_path / "s.csv", 300_000)
    assert sample.size <= 300_000
    assert sample.size > 290_000
    frame = pd.read_csv(sample.path)
    assert len(frame) == sample.rows
    assert tuple(frame.columns) == COLUMNS
    assert frame["note"].astype(str).str.contains(",").any()  # quoted strings with commas


def test_tiny_size_still_gives_one_row(tmp_path: Path) -> None:
    sample = generate_csv(tmp_path / "s.csv", 10)
    assert sample.rows == 1
    assert len(pd.read_csv(sample.path)) == 1
