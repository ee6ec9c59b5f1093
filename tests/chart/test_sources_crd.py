"""The CrawlSource CRD: valid, structural, explained, its template in step with the CrawlJob spec."""

from __future__ import annotations

from typing import Any

import kmock
import yaml
from chart_render import CRD
from test_chart_render import structural_problems, validate

from crawljob import sources

SOURCE_CRD = CRD.with_name("crawlsources.crawljob.io.yaml")


def load() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(SOURCE_CRD.read_text())
    return crd


def test_crd_is_valid_structural_and_has_the_printer_columns() -> None:
    crd = load()
    validate(crd)
    (version,) = crd["spec"]["versions"]
    assert structural_problems(version["schema"]["openAPIV3Schema"]) == []
    assert version["subresources"] == {"status": {}}
    columns = [column["name"].upper() for column in version["additionalPrinterColumns"]]
    assert columns == ["BUCKET", "PREFIX", "READY", "LAST SWEEP", "CRAWLJOBS", "AGE"]
    assert crd["spec"]["names"]["plural"] == sources.PLURAL
    assert crd["spec"]["names"]["kind"] == sources.KIND


def test_the_short_name_is_no_built_in_ones() -> None:
    emulator = kmock.KubernetesEmulator()
    emulator.resources.load_bundled()
    built_in = {name for info in emulator.resources.values() for name in info.shortnames or ()}
    assert "cs" in built_in  # componentstatuses: why the short name is not "cs"
    assert load()["spec"]["names"]["shortNames"] == [sources.SHORT_NAME]
    assert sources.SHORT_NAME not in built_in


def test_the_template_accepts_exactly_the_crawljob_spec_fields_but_source() -> None:
    crawljob_spec = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]["properties"]
    template = load()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "template"
    ]["properties"]
    expected = {name: schema for name, schema in crawljob_spec.items() if name != "source"}
    assert template == expected
    assert set(template) == set(sources.TEMPLATE_FIELDS)


def test_the_interval_pattern_and_the_parser_agree() -> None:
    import re

    spec = load()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    pattern = re.compile(spec["interval"]["pattern"])
    assert spec["interval"]["default"] == sources.DEFAULT_INTERVAL
    for text in ("0", "10m", "1h30m", "1.5s", "250ms", "soon", "10", "1d", "-1m", ""):
        try:
            sources.parse_duration(text)
            parsed = True
        except ValueError:
            parsed = False
        assert bool(pattern.match(text)) is parsed, text


def test_the_queue_url_pattern_and_the_parser_agree_and_sqs_is_explained() -> None:
    import re

    spec = load()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    sqs = spec["sqs"]
    assert sqs["required"] == ["queueUrl"] and "ingress" in sqs["description"]
    assert sqs["properties"]["queueUrl"]["description"]
    pattern = re.compile(sqs["properties"]["queueUrl"]["pattern"])
    for url in (
        "https://sqs.eu-west-1.amazonaws.com/1/q",
        "http://127.0.0.1:5000/1/q",
        "landing-events",
        "sqs://q",
    ):
        body = {"metadata": {"name": "s"}, "spec": {"bucket": "landing", "sqs": {"queueUrl": url}}}
        try:
            sources.source_from_body(body)
            parsed = True
        except sources.InvalidSource:
            parsed = False
        assert bool(pattern.match(url)) is parsed, url
