import re

import pytest

from crawljob import resource
from crawljob.resource import MAX_NAME_LENGTH, ObjectRef, crawljob_manifest, crawljob_name, slugify

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "key",
    [
        "data/2026/11/29/device-export.csv",
        "Weird Name (1) + copy.CSV",
        "données/été 2026/日本語.csv",
        "x" * 900,
        "123-starts-with-digits.csv",
        "%%%.csv",
        "folder/",
        "-",
    ],
)
def test_name_is_a_valid_short_dns_label(key: str) -> None:
    name = crawljob_name(ObjectRef(bucket="bucket", key=key))
    assert DNS_LABEL.match(name), name
    assert len(name) <= MAX_NAME_LENGTH


def test_name_is_stable_and_readable() -> None:
    ref = ObjectRef(bucket="iot", key="exports/2026/Device Export.csv", etag='"abc"')
    assert crawljob_name(ref) == crawljob_name(ObjectRef(bucket="iot", key=ref.key, etag="abc"))
    assert crawljob_name(ref).startswith("device-export-csv-")


def test_distinct_versions_and_buckets_get_distinct_names() -> None:
    names = {
        crawljob_name(ObjectRef(bucket="b", key="k.csv", version_id="v1")),
        crawljob_name(ObjectRef(bucket="b", key="k.csv", version_id="v2")),
        crawljob_name(ObjectRef(bucket="b2", key="k.csv", version_id="v1")),
        crawljob_name(ObjectRef(bucket="b", key="k.csv", etag="e1")),
        crawljob_name(ObjectRef(bucket="b", key="k.csv")),
    }
    assert len(names) == 5


def test_version_id_wins_over_etag_for_identity() -> None:
    assert ObjectRef(bucket="b", key="k", version_id="v", etag="e").identity() == "v"
    assert ObjectRef(bucket="b", key="k", etag='"e"').identity() == "e"
    assert ObjectRef(bucket="b", key="k", sequencer="0A").identity() == "0A"


def test_slugify_keeps_ascii_letters_and_digits() -> None:
    assert slugify("Hello, World! 2026", 40) == "hello-world-2026"
    assert slugify("été", 40) == "ete"


def test_manifest_carries_the_decoded_key_and_the_raw_one() -> None:
    ref = ObjectRef(bucket="b", key="a b.csv", etag='"e"', size=10)
    body = crawljob_manifest(ref, "ns", raw_key="a+b.csv")
    assert body["spec"] == {"source": {"bucket": "b", "key": "a b.csv", "eTag": "e", "size": 10}}
    metadata = body["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["namespace"] == "ns"
    assert metadata["annotations"] == {"crawljob.io/raw-key": "a+b.csv"}


def test_labels_of_a_hand_written_spec_of_the_wrong_shape_are_only_the_phase() -> None:
    """A spec or source that is not a mapping (specs.py fails it) must not break the label sync."""
    for spec in ("s3://bucket/key.csv", {"source": "s3://bucket/key.csv"}, {"source": ["b"]}):
        body = {"metadata": {"labels": "x"}, "spec": spec, "status": {"phase": "Failed"}}
        assert resource.wanted_labels(body) == {resource.LABEL_PHASE: "Failed", resource.LABEL_BUCKET: None}
        assert resource.labels_patch(body) == {resource.LABEL_PHASE: "Failed"}
