"""Can the receiver store CrawlJobs right now? The check behind `/readyz`.

`GET /version` is served by the apiserver without etcd, so it says nothing about writes. A
server-side dry-run create of a CrawlJob goes through authentication, RBAC (the `create` verb),
admission, the CRD's schema and a read of etcd (the apiserver looks the name up), storing nothing:
it fails exactly when a real create would. A real create that succeeded within the cache period
answers for it, so a busy receiver sends no extra requests.
"""

from __future__ import annotations

import contextlib

from crawljob import kube, resource

# The object the dry run "creates": never stored.
PROBE_REF = resource.ObjectRef(bucket="crawljob-readiness-probe", key="readyz", etag="0")


def probe_manifest(namespace: str) -> dict[str, object]:
    """A valid CrawlJob manifest for the dry run."""
    return resource.crawljob_manifest(PROBE_REF, namespace)


async def check_writable(client: kube.KubeClient, namespace: str, timeout: float) -> str:
    """Dry-run create a CrawlJob; a message saying why writes work, or kube.KubeError saying why not."""
    # A 409 (the name exists) proves it too: the apiserver read etcd to say so.
    with contextlib.suppress(kube.Conflict):
        await client.create(
            kube.CRAWLJOBS, namespace, probe_manifest(namespace), dry_run=True, timeout=timeout
        )
    return "the Kubernetes API accepts CrawlJobs (server-side dry-run create)"
