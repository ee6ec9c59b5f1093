"""Every kubectl command the README shows, made runnable against a test's namespace and CrawlJob.

Used by tests/integration/test_kubectl_local.py (the local stack's emulator) and
tests/cluster/test_kubectl.py (the real control plane): one list, so the README cannot drift from
what both tiers run.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

from crawljob import kube, resource

README = Path(__file__).resolve().parents[2] / "README.md"
PLUGIN = "crawljob"  # `kubectl crawljob ...` runs the kubectl-crawljob plugin
# The README's own bucket and key (its curl example, `kubectl crawljob submit`): tests upload it.
README_BUCKET = "crawljob-inbox"
README_KEY = "iot/exports/sensor-readings.csv"
_INLINE = re.compile(r"`(kubectl [^`]+)`")
_FENCE = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def readme_commands(text: str | None = None) -> list[str]:
    """The kubectl commands of the README, in order, once each (inline code and sh blocks)."""
    text = README.read_text() if text is None else text
    found: list[str] = []
    for block in _FENCE.findall(text):
        for line in block.splitlines():
            command = line.split(" #", 1)[0].strip()
            if command.startswith("kubectl "):
                found.append(command)
    found += [" ".join(command.split()) for command in _INLINE.findall(text)]
    return list(dict.fromkeys(found))


def manifest(name: str) -> str:
    """The `crawljob.yaml` of the README's `kubectl create -f`."""
    return (
        "apiVersion: crawljob.io/v1alpha1\nkind: CrawlJob\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n  source: {bucket: inbox, key: by-hand/day1.csv}\n  output: {format: jsonl}\n"
    )


def prepare(command: str, name: str, namespace: str, kubeconfig: Path, manifest: Path) -> list[str]:
    """argv for *command* with the placeholders filled: NAME, the namespace, `$(date +%s)`, the
    kubeconfig (`…`), crawljob.yaml; deleting the CRD is a server-side dry run (the CRD serves the
    other tests)."""
    text = command.replace("$(date +%s)", str(int(time.time())))
    text = text.replace("crawljob.yaml", str(manifest))
    text = text.replace("--kubeconfig …", f"--kubeconfig {kubeconfig}")
    argv = shlex.split(text)
    argv = [name if word == "NAME" else word for word in argv]
    if "-n" in argv:
        argv[argv.index("-n") + 1] = namespace
    elif argv[1] == PLUGIN:
        argv[2:2] = ["-n", namespace]  # kubectl passes no flag placed before a plugin's name
    else:
        argv[1:1] = ["-n", namespace]
    if argv[-3:-1] == ["delete", "crd"]:
        argv.append("--dry-run=server")
    return argv


async def failed_crawljob(client: kube.KubeClient, namespace: str) -> str:
    """A CrawlJob the operator has failed, for the README's `-l crawljob.io/phase=Failed` and
    `rerun --failed`: its status and the labels the operator keeps (resource.labels_patch)."""
    ref = resource.ObjectRef(bucket=README_BUCKET, key="daily/2024-05-01.csv", etag="abc")
    created = await client.create(kube.CRAWLJOBS, namespace, resource.crawljob_manifest(ref, namespace))
    name = str(created["metadata"]["name"])
    status = {"phase": "Failed", "reason": "BadInput", "message": "the source is not readable CSV"}
    updated = await client.patch(kube.CRAWLJOBS, namespace, name, {"status": status}, "status")
    await client.patch(
        kube.CRAWLJOBS, namespace, name, {"metadata": {"labels": resource.labels_patch(updated)}}
    )
    return name
