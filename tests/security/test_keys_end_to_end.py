"""Keys that URIs mangle, end to end on the local stack: receiver → operator → worker → output.

Finding 2 of issue 13: the operator passed `s3://bucket/key` and the worker's `urlparse` dropped
what follows `#` or `?` and stripped tabs and newlines, so it read another object than the event
named. Finding 9: the local stack's receiver did not know the output URI, so its loop guard was off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from crawljob import kube
from crawljob.local.sample import generate_csv
from crawljob.local.stack import Stack, StackSettings, local_stack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

AWKWARD_KEYS = [
    "keys/reports/q1#final.csv",
    "keys/what?x=1.csv",
    "keys/literal%23percent.csv",
    "keys/100% done.csv",
    "keys/a+b plus.csv",
    "keys/with  spaces .csv",
    "keys/euro €.csv",
    "keys/tab\there.csv",
]
# moto's server cannot store a key holding a newline (its route pattern `.+` stops at one), so
# that key is followed to the worker, which must look for exactly it, not the decoy without it.
NEWLINE_KEY = "keys/new\nline.csv"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings = StackSettings(work_dir=tmp_path_factory.mktemp("stack"), max_active=4)
    async with local_stack(settings) as running:
        yield running


async def test_awkward_keys_are_crawled_from_exactly_the_object_the_event_named(
    stack: Stack, tmp_path: Path
) -> None:
    expected: dict[str, int] = {}
    for index, key in enumerate(AWKWARD_KEYS):
        sample = generate_csv(tmp_path / f"{index}.csv", 4_000 + 100 * index, seed=index)
        stack.upload(sample.path, key)
        expected[key] = sample.rows
    # Decoys where a truncated or stripped key would land: their row counts differ.
    decoy = generate_csv(tmp_path / "decoy.csv", 50_000, seed=99)
    for truncated in ("keys/reports/q1", "keys/what", "keys/tabhere.csv"):
        stack.upload(decoy.path, truncated)
    names = {key: await stack.trigger(key) for key in AWKWARD_KEYS}
    finished = await asyncio.gather(*(stack.wait_finished(name, timeout=240) for name in names.values()))
    for key, crawljob in zip(AWKWARD_KEYS, finished, strict=True):
        status = crawljob["status"]
        assert status["phase"] == "Succeeded", (key, status)
        assert crawljob["spec"]["source"]["key"] == key
        assert status["result"]["rowsRead"] == expected[key], key


async def test_newline_key_reaches_the_worker_intact(stack: Stack, tmp_path: Path) -> None:
    decoy = generate_csv(tmp_path / "decoy.csv", 10_000, seed=5)
    stack.upload(decoy.path, NEWLINE_KEY.replace("\n", ""))
    name = await stack.trigger(NEWLINE_KEY)
    crawljob = await stack.wait_finished(name, timeout=180)
    assert crawljob["spec"]["source"]["key"] == NEWLINE_KEY
    (job,) = [
        job
        for job in await stack.client.list(kube.JOBS, stack.settings.namespace)
        if job["metadata"]["name"] == name
    ]
    assert f"--source-key={NEWLINE_KEY}" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    # The stripped key exists; the exact one cannot: reading the decoy would have succeeded.
    assert crawljob["status"]["phase"] == "Failed", crawljob["status"]
    assert (
        "does not exist" in crawljob["status"]["message"] or "NoSuchKey" in crawljob["status"]["message"]
    ), crawljob["status"]


async def test_suffix_after_a_hash_does_not_smuggle_another_object(stack: Stack, tmp_path: Path) -> None:
    secret = generate_csv(tmp_path / "salaries.csv", 30_000, seed=7)
    stack.upload(secret.path, "private/salaries.txt")
    public = generate_csv(tmp_path / "public.csv", 2_000, seed=8)
    stack.upload(public.path, "private/salaries.txt#.csv")
    name = await stack.trigger("private/salaries.txt#.csv")
    crawljob = await stack.wait_finished(name, timeout=180)
    assert crawljob["status"]["phase"] == "Succeeded", crawljob["status"]
    assert crawljob["status"]["result"]["rowsRead"] == public.rows != secret.rows


async def test_event_for_an_output_object_is_ignored_by_the_loop_guard(stack: Stack) -> None:
    before = len(await stack.crawljobs())
    event = stack.s3_event("some-crawl/part-00000.csv", bucket=stack.settings.output_bucket)
    status, answer = await stack.post_event(event)
    assert status == 202, answer
    assert answer["crawljobs"] == []
    assert "loop guard" in answer["ignored"][0]["reason"]
    assert len(await stack.crawljobs()) == before


@pytest.mark.parametrize("key", ["nul\u0000.csv", "x" * 1025])
async def test_key_s3_cannot_hold_is_a_400(stack: Stack, key: str) -> None:
    before = len(await stack.crawljobs())
    status, answer = await stack.post_event(stack.s3_event(key))
    assert status == 400, answer
    assert answer["field"] == "Records[0].s3.object.key"
    assert len(await stack.crawljobs()) == before
