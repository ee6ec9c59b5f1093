"""The worker's Kubernetes calls: merge patches of its CrawlJob's status (and, for a shard, reads of it:
`shardprogress`), through the kubernetes package.

`import kubernetes` costs ~0.4 s of CPU (its package imports every API model), as much as pandas and
pyarrow together, on the worker's critical path if imported at start. So nothing on the start-up path imports it: `StatusWriter` imports it on its first
patch, which `report.Progress` sends from its background thread once the first block was parsed
(`tests/unit/test_worker_startup_imports.py` fails if a start-up module imports it).

In a cluster, kubernetes' `InClusterConfigLoader` reads the API address (KUBERNETES_SERVICE_HOST/PORT),
the service account's CA and token, and re-reads the token file every minute: the kubelet rotates
projected tokens, and a long crawl outlives the token it started with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("crawljob_worker.kubeapi")

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The CrawlJob resource (crawljob.resource holds the same names; the worker cannot import it).
GROUP, VERSION, PLURAL = "crawljob.io", "v1alpha1", "crawljobs"


class PatchFailed(Exception):
    """A status patch did not land (API error, unreachable server, unusable in-cluster credentials)."""


class Conflict(PatchFailed):
    """409: the patch carried a metadata.resourceVersion the CrawlJob no longer has (read it again)."""


@dataclass(frozen=True)
class KubeTarget:
    """The CrawlJob to patch and how to reach its API: an explicit *server*, else in-cluster."""

    namespace: str
    name: str
    server: str | None = None
    service_host: str = ""
    service_port: str = "443"
    service_account_dir: str = SERVICE_ACCOUNT_DIR


def kube_target(
    name: str | None, namespace: str | None, server: str | None, environ: Mapping[str, str],
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> KubeTarget | None:  # fmt: skip
    """The API server to report to: the given server, else in-cluster; None when not in a CrawlJob."""
    if not name:
        return None
    if server:
        return KubeTarget(namespace=namespace or "default", name=name, server=server.rstrip("/"))
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (Path(service_account_dir) / "token").exists():
        log.warning(
            "CRAWLJOB_NAME is set but no API server is known (no CRAWLJOB_KUBE_SERVER, not in a cluster)"
        )
        return None
    if not namespace:
        try:
            namespace = (Path(service_account_dir) / "namespace").read_text(encoding="utf-8").strip()
        except OSError:
            namespace = "default"
    return KubeTarget(
        namespace=namespace, name=name, service_host=host, service_port=port,
        service_account_dir=service_account_dir,
    )  # fmt: skip


def api_configuration(target: KubeTarget) -> Any:
    """A `kubernetes.client.Configuration` for *target* (imports the kubernetes package)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    configuration.retries = 1  # progress is best effort: the next report comes a few seconds later
    if target.server:
        configuration.host = target.server
        return configuration
    directory = Path(target.service_account_dir)
    loader: Any = config.incluster_config.InClusterConfigLoader  # kubernetes.config has no annotations
    loader(
        token_filename=str(directory / "token"),
        cert_filename=str(directory / "ca.crt"),
        environ={
            "KUBERNETES_SERVICE_HOST": target.service_host,
            "KUBERNETES_SERVICE_PORT": target.service_port,
        },
    ).load_and_set(configuration)
    return configuration


class StatusWriter:
    """Merge patches (and reads) of one CrawlJob's status subresource; the client is made on first use."""

    def __init__(self, target: KubeTarget) -> None:
        self.target = target
        self._api: Any = None

    def patch(self, body: Mapping[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One merge patch (`application/merge-patch+json`); the CrawlJob as stored after it. Raises
        Conflict when the body's metadata.resourceVersion is stale, PatchFailed on other failures."""
        return self._call("patch_namespaced_custom_object_status", dict(body), timeout=timeout)

    def get(self, timeout: float = 5.0) -> dict[str, Any]:
        """The CrawlJob as stored (GET of its status subresource; RBAC: get crawljobs/status)."""
        return self._call("get_namespaced_custom_object_status", timeout=timeout)

    def _call(self, method: str, *body: Any, timeout: float) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config.config_exception import ConfigException
        from urllib3.exceptions import HTTPError

        try:
            if self._api is None:
                from kubernetes import client

                self._api = client.CustomObjectsApi(client.ApiClient(api_configuration(self.target)))
            answer = getattr(self._api, method)(
                GROUP, VERSION, self.target.namespace, PLURAL, self.target.name, *body,
                _request_timeout=timeout,
            )  # fmt: skip
        except ApiException as error:
            failed = Conflict if error.status == 409 else PatchFailed
            raise failed(f"HTTP {error.status} {error.reason}: {str(error.body or '')[:300]}") from error
        except (ConfigException, HTTPError, OSError, ValueError) as error:
            raise PatchFailed(f"{type(error).__name__}: {error}") from error
        return answer if isinstance(answer, dict) else {}
