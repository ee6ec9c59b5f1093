"""Column type spellings, stable inferred types and header names."""

import pyarrow as pa
import pytest

from crawljob_worker.errors import WorkerError
from crawljob_worker.schema import (
    check_dtypes_cover,
    generated_names,
    parse_dtypes,
    parse_type,
    stable_type,
    unique_names,
)


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("int64", pa.int64()),
        ("Int64", pa.int64()),
        ("float", pa.float64()),
        ("str", pa.string()),
        ("bool", pa.bool_()),
        ("date", pa.date32()),
        ("timestamp", pa.timestamp("us")),
        ("timestamp[ms]", pa.timestamp("ms")),
        ("timestamp[ns, UTC]", pa.timestamp("ns", tz="UTC")),
        ("datetime64[ns]", pa.timestamp("ns")),
    ],
)
def test_type_spellings(spelling: str, expected: pa.DataType) -> None:
    assert parse_type(spelling) == expected


def test_unknown_type_is_an_invalid_argument_naming_it() -> None:
    with pytest.raises(WorkerError) as caught:
        parse_dtypes({"a": "complex128"})
    assert caught.value.code == 2
    assert "complex128" in caught.value.message


def test_dtypes_for_missing_columns_are_refused() -> None:
    with pytest.raises(WorkerError) as caught:
        check_dtypes_cover({"tmep": pa.float64()}, ["temp", "ts"])
    assert "'tmep'" in caught.value.message


def test_inferred_types_are_widened_to_survive_later_chunks() -> None:
    assert stable_type(pa.null()) == pa.string()
    assert stable_type(pa.timestamp("s")) == pa.timestamp("us")
    assert stable_type(pa.timestamp("ns")) == pa.timestamp("ns")
    assert stable_type(pa.int64()) == pa.int64()


def test_header_names_are_made_unique_and_non_empty() -> None:
    assert unique_names(["a", "a", "", " b "]) == ["a", "a_2", "column_3", "b"]
    assert generated_names(2) == ["column_1", "column_2"]
