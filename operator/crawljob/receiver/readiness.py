"""Can the receiver store CrawlJobs right now? The check behind `/readyz`.

`GET /version` is served by the apiserver without etcd, so it says nothing about writes. A
server-side dry-run create of a CrawlJob goes through authentication, RBAC (the `create` verb),
admission and the CRD's schema, storing nothing. It does not quite prove that etcd answers: the
apiserver's dry run reads the name from etcd but takes *any* error of that read for "the name is
free" and answers 201 (`DryRunnableStorage.Create`), so an etcd read that fails at once (no leader
during an etcd election) gives a ready answer while creates fail. With etcd stopped, as in the fault
tier, the read hangs and the check times out instead. So a GET of the same name is sent beside it:
without a resourceVersion it is a quorum read of etcd, and 404 (or the object) proves etcd
answered. Both must pass. A real create that succeeded within the cache period answers for it, so a busy receiver
sends no extra requests.
"""

from __future__ import annotations

import asyncio

from crawljob import kube, resource

# The object the dry run "creates": never stored.
PROBE_REF = resource.ObjectRef(bucket="crawljob-readiness-probe", key="readyz", etag="0")


def probe_manifest(namespace: str) -> dict[str, object]:
    """A valid CrawlJob manifest for the dry run."""
    return resource.crawljob_manifest(PROBE_REF, namespace)


async def check_writable(client: kube.KubeClient, namespace: str, timeout: float) -> str:
    """Dry-run create a CrawlJob and read its name back (together, each within *timeout*); a message
    saying why writes work, or kube.KubeError saying why not."""
    created, read = await asyncio.gather(
        client.create(kube.CRAWLJOBS, namespace, probe_manifest(namespace), dry_run=True, timeout=timeout),
        client.get(kube.CRAWLJOBS, namespace, resource.crawljob_name(PROBE_REF), timeout=timeout),
        return_exceptions=True,
    )
    # A 409 (the name exists) proves writes reach storage too; a 404 of the read proves etcd answered.
    for outcome, fine in ((created, kube.Conflict), (read, kube.NotFound)):
        if isinstance(outcome, BaseException) and not isinstance(outcome, fine):
            raise outcome
    return "the Kubernetes API accepts CrawlJobs (server-side dry-run create, and etcd answers a read)"
