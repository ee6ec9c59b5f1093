"""Hand-made CrawlJobs the operator must survive (issue 13, findings 3 and 8), on the API emulator.

Before: `spec.output: "s3://x/"` raised an AttributeError in the Job builder that only
KeyError/TypeError/ValueError handlers missed; the task creating Jobs died, `/healthz` still said
ok, and every later CrawlJob stayed Queued forever. Now each bad CrawlJob fails on its own with
a reason, the next valid one succeeds, and a CrawlJob asking for another image, service account
or env fails with `OverrideNotAllowed` and gets no Job.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp

from crawljob import kube
from crawljob.local.emulator import Emulator
from fakes.stack import NAMESPACE, crawljob, running_operator, running_runner, wait_phase

BAD_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("output-string", {"output": "s3://x/"}),
    ("csv-string", {"csv": "semicolon"}),
    ("template-list", {"jobTemplate": ["image"]}),
    ("env-string", {"jobTemplate": {"env": "A=1"}}),
    ("backoff-word", {"backoffLimit": "many"}),
    ("deadline-word", {"activeDeadlineSeconds": "soon"}),
    ("source-string", {"source": "s3://bucket/key.csv"}),
    ("shards-word", {"shards": "four"}),
    ("shards-zero", {"shards": 0}),
    ("shard-size-negative", {"shardSizeMb": -64}),
]
OVERRIDES: list[tuple[str, dict[str, Any]]] = [
    ("image", {"jobTemplate": {"image": "attacker/miner:latest"}}),
    ("account", {"jobTemplate": {"serviceAccountName": "crawljob-operator"}}),
    (
        "secret-env",
        {"jobTemplate": {"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]}},
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_bad_specs_fail_alone_and_the_next_crawljob_succeeds(
    emulator: tuple[Emulator, str], kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    port = free_port()
    bad = []
    for label, spec in BAD_SPECS:
        body = crawljob(f"bad/{label}.csv")
        body["spec"].update(spec)
        bad.append(body)
    refused = []
    for label, spec in OVERRIDES:
        body = crawljob(f"override/{label}.csv")
        body["spec"].update(spec)
        refused.append(body)
    valid = crawljob("good/ok-7.csv")
    async with (
        running_runner(kube_client),
        running_operator(emulator[1], tmp_path / "operator.log", **{"health-port": port}),
        aiohttp.ClientSession() as http,
    ):
        for body in [*bad, *refused]:
            await kube_client.create(kube.CRAWLJOBS, NAMESPACE, body)
        await kube_client.create(kube.CRAWLJOBS, NAMESPACE, valid)
        done = await wait_phase(kube_client, valid["metadata"]["name"], {"Succeeded", "Failed"}, timeout=60)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["result"]["rowsRead"] == 7
        for body in bad:
            failed = await wait_phase(kube_client, body["metadata"]["name"], {"Failed"}, timeout=30)
            assert failed["status"]["reason"] == "InvalidSpec", failed["status"]
            # specs.py names the field: nothing reads a hand-written spec before it.
            assert "spec." in failed["status"]["message"], failed["status"]
        for body in refused:
            failed = await wait_phase(kube_client, body["metadata"]["name"], {"Failed"}, timeout=30)
            assert failed["status"]["reason"] == "OverrideNotAllowed", failed["status"]
            assert "spec.jobTemplate." in failed["status"]["message"]
        async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
            assert health.status == 200, await health.text()
    job_names = {job["metadata"]["name"] for job in await kube_client.list(kube.JOBS, NAMESPACE)}
    assert job_names == {valid["metadata"]["name"]}
