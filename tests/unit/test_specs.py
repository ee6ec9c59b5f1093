"""A hand-made CrawlJob spec is checked field by field before its Job is built (issue 13, finding 3)."""

from __future__ import annotations

from typing import Any

import pytest

from crawljob.operator import jobs
from crawljob.operator.settings import OperatorSettings
from crawljob.operator.specs import spec_problem

SOURCE = {"source": {"bucket": "in", "key": "data.csv"}}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("s3://x/", "spec must be an object"),
        ({"source": "s3://in/data.csv"}, "spec.source"),
        ({"source": {"bucket": "in"}}, "spec.source.key"),
        ({"source": {"bucket": "", "key": "k"}}, "spec.source.bucket"),
        ({"source": {"bucket": "in", "key": 7}}, "spec.source.key"),
        ({"source": {"bucket": "in", "key": "a\0b"}}, "spec.source.key"),
        (SOURCE | {"output": "s3://x/"}, "spec.output"),
        (SOURCE | {"output": {"uri": "http://example.com/"}}, "spec.output.uri"),
        (SOURCE | {"output": {"uri": "s3:///nobucket/"}}, "spec.output.uri"),
        (SOURCE | {"output": {"format": "xml"}}, "spec.output.format"),
        (SOURCE | {"csv": "semicolon"}, "spec.csv"),
        (SOURCE | {"csv": {"header": "yes"}}, "spec.csv.header"),
        (SOURCE | {"csv": {"delimiter": 9}}, "spec.csv.delimiter"),
        (SOURCE | {"csv": {"dtypes": ["a"]}}, "spec.csv.dtypes"),
        (SOURCE | {"jobTemplate": ["image"]}, "spec.jobTemplate"),
        (SOURCE | {"jobTemplate": {"env": "A=1"}}, "spec.jobTemplate.env"),
        (SOURCE | {"jobTemplate": {"tolerations": [1]}}, "spec.jobTemplate.tolerations"),
        (SOURCE | {"jobTemplate": {"resources": "big"}}, "spec.jobTemplate.resources"),
        (SOURCE | {"maxRejectRatio": "0.1"}, "spec.maxRejectRatio"),
        (SOURCE | {"maxRejectRatio": 2}, "spec.maxRejectRatio"),
        (SOURCE | {"backoffLimit": "many"}, "spec.backoffLimit"),
        (SOURCE | {"backoffLimit": 10**40}, "spec.backoffLimit"),
        (SOURCE | {"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds"),
        (SOURCE | {"shards": 0}, "spec.shards"),
        (SOURCE | {"shards": -4}, "spec.shards"),
        (SOURCE | {"shards": "4"}, "spec.shards"),
        (SOURCE | {"shards": 4.5}, "spec.shards"),
        (SOURCE | {"shards": True}, "spec.shards"),
        (SOURCE | {"shards": 1001}, "spec.shards"),
        (SOURCE | {"shardSizeMb": 0}, "spec.shardSizeMb"),
        (SOURCE | {"shardSizeMb": "64"}, "spec.shardSizeMb"),
        ({"source": {"bucket": "b", "key": "k", "size": -1}}, "spec.source.size"),
        ({"source": {"bucket": "b", "key": "k", "size": "12"}}, "spec.source.size"),
        ({"source": {"bucket": "b", "key": "k", "size": 10**30}}, "spec.source.size"),
    ],
)
def test_bad_spec_is_named(spec: Any, field: str) -> None:
    problem = spec_problem(spec)
    assert problem is not None and problem.startswith(field), problem


@pytest.mark.parametrize(
    "spec",
    [
        SOURCE,
        SOURCE
        | {"output": {"uri": "s3://out/p/", "format": "csv"}, "csv": {"delimiter": ";", "header": False}},
        SOURCE | {"jobTemplate": {"env": [{"name": "A", "value": "1"}], "resources": {}}, "backoffLimit": 0},
        SOURCE | {"maxRejectRatio": 0, "activeDeadlineSeconds": 3600, "shards": 1},
        SOURCE | {"shards": 1000},
        {"source": {"bucket": "b", "key": "k", "size": 0}, "shardSizeMb": 64},
    ],
)
def test_good_spec_passes_and_builds(spec: dict[str, Any]) -> None:
    assert spec_problem(spec) is None
    crawljob = {"metadata": {"name": "n", "namespace": "d", "uid": "u"}, "spec": spec}
    assert jobs.build_job(crawljob, OperatorSettings())["kind"] == "Job"
