import json
import logging

from crawljob.logs import LineFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("crawljob.test", logging.INFO, __file__, 1, "created %s", ("a",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_fields_and_the_crawljob_name() -> None:
    line = json.loads(LineFormatter("json").format(_record(fields={"outcome": "created"}, crawljob="cj-1")))
    assert line["message"] == "created a"
    assert line["outcome"] == "created"
    assert line["crawljob"] == "cj-1"
    assert line["level"] == "info"


def test_text_lines_end_with_key_value_fields() -> None:
    line = LineFormatter("text").format(_record(fields={"key": "a b.csv"}))
    assert line.endswith('crawljob.test: created a key="a b.csv"')
