"""Every metric the operator and the receiver export is documented in docs/operator.md (and no
documented one is missing), under one prefix scheme."""

from __future__ import annotations

import re
from pathlib import Path

from fakes.metric_names import exported

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operator.md"


def documented() -> set[str]:
    return set(re.findall(r"^\| `(crawljob_[a-z_]+)` \|", DOCS.read_text(), re.MULTILINE))


def test_every_exported_metric_is_documented_and_every_documented_one_exported() -> None:
    assert exported() == documented()


def test_one_prefix_scheme() -> None:
    for name in exported():
        assert name.startswith("crawljob_") and not name.startswith("crawljob_operator_"), name
