"""The one place that talks to the Kubernetes API: a small async client over aiohttp.

It speaks plain REST (JSON, merge patches, watch streams), which is all crawljob needs,
and works the same against a real API server and against the kmock emulator. Kubeconfigs are
resolved by the `kubernetes` package's loader (why not its clients: docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from crawljob.models import Body

log = logging.getLogger("crawljob.kube")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    """An API call failed; *status* is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class NotFound(KubeError):
    """404: the object (or resource) does not exist."""


class Conflict(KubeError):
    """409: the object already exists, or a stale resourceVersion was written."""


class Invalid(KubeError):
    """422/400: the server refused the object (schema validation)."""


class Unavailable(KubeError):
    """The API could not be reached, timed out, or answered 5xx/429: worth retrying later."""


@dataclass(frozen=True)
class Resource:
    """A REST resource: ``Resource("batch", "v1", "jobs")``; group "" is the core API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)


CRAWLJOBS = Resource("crawljob.io", "v1alpha1", "crawljobs")
CRAWLSOURCES = Resource("crawljob.io", "v1alpha1", "crawlsources")
JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
EVENTS = Resource("", "v1", "events")
# kopf's peering objects (active/standby operators, `crawljob operator --peering`).
PEERINGS = Resource("kopf.dev", "v1", "kopfpeerings")
CLUSTER_PEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)


@dataclass
class Connection:
    """Where the API is and how to authenticate to it.

    *refresh*, when set, returns the current bearer token: a kubeconfig's exec plugin or OIDC provider
    hands out short-lived tokens (15 minutes for `aws eks get-token`), which kubernetes' kubeconfig
    loader renews when they expire; `bearer()` asks it before each request.
    """

    server: str
    token: str | None = None
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    insecure: bool = False
    default_namespace: str = "default"
    refresh: Callable[[], str | None] | None = field(default=None, repr=False)

    def bearer(self) -> str | None:
        """The token to send now (renewed through *refresh* when there is one)."""
        if self.refresh is not None:
            self.token = self.refresh()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return True
        if self.insecure:
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert_file:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context


def connection_from_kubeconfig(path: str | Path, context_name: str | None = None) -> Connection:
    """One context of a kubeconfig (a path, or several joined with ':' as in $KUBECONFIG), resolved by
    kubernetes' own loader: tokens, token files, client certificates, exec plugins, OIDC providers.

    The kubernetes package is imported here, not at the top: it costs ~0.4 s of CPU, which the receiver
    and the operator in a cluster (no kubeconfig) do not pay.
    """
    from kubernetes import client
    from kubernetes import config as kubernetes_config

    config: Any = kubernetes_config  # its functions carry no annotations
    configuration = client.Configuration()
    try:
        contexts, current = config.list_kube_config_contexts(str(path))
        chosen = next((c for c in contexts if c["name"] == context_name), None) if context_name else current
        if chosen is None:
            raise ValueError(f"kubeconfig {path} has no context {context_name!r}")
        # persist_config=False: never write renewed tokens back into the user's kubeconfig.
        config.load_kube_config(
            str(path), context=chosen["name"], client_configuration=configuration, persist_config=False
        )
    except config.ConfigException as exc:
        raise ValueError(f"kubeconfig {path}: {exc}") from exc

    def current_token() -> str | None:
        # auth_settings() runs the loader's refresh hook, which renews an expired exec/OIDC token.
        header = str(configuration.auth_settings().get("BearerToken", {}).get("value") or "")
        return header.removeprefix("Bearer ").strip() or None

    header = str(configuration.auth_settings().get("BearerToken", {}).get("value") or "")
    if header and not header.startswith("Bearer "):
        raise ValueError(f"kubeconfig {path}: only bearer tokens and client certificates are supported")
    token = current_token()
    if str(configuration.host).startswith("https") and not token and not configuration.cert_file:
        raise ValueError(
            f"kubeconfig {path}: context {chosen['name']!r} gives no credentials (no token, no client "
            "certificate; an exec or auth-provider plugin that failed logs its error above)"
        )
    return Connection(
        server=str(configuration.host).rstrip("/"),
        token=token,
        ca_file=configuration.ssl_ca_cert,
        client_cert_file=configuration.cert_file,
        client_key_file=configuration.key_file,
        insecure=not configuration.verify_ssl,
        default_namespace=(chosen.get("context") or {}).get("namespace") or "default",
        refresh=current_token if configuration.refresh_api_key_hook is not None else None,
    )


def connection_in_cluster(
    directory: Path = SERVICE_ACCOUNT_DIR, host: str = "", port: str = "", reread_seconds: float = 60.0
) -> Connection:
    """The pod's service-account credentials and the API address from the standard env vars.

    The token file is read again every *reread_seconds* (as kubernetes' in-cluster loader does): the
    kubelet rotates projected service-account tokens, and the receiver and operator run for days.
    """
    token_file = directory / "token"
    read_at = [time.monotonic()]
    token = [token_file.read_text().strip()]

    def current_token() -> str | None:
        if time.monotonic() - read_at[0] >= reread_seconds:
            try:
                token[0] = token_file.read_text().strip()
                read_at[0] = time.monotonic()
            except OSError as exc:  # keep the last token; the API answers 401 if it is no longer valid
                log.warning("cannot re-read the service-account token %s: %s", token_file, exc)
        return token[0]

    return Connection(
        server=f"https://{host}:{port}",
        token=token[0],
        ca_file=str(directory / "ca.crt"),
        default_namespace=(directory / "namespace").read_text().strip()
        if (directory / "namespace").exists()
        else "default",
        refresh=current_token,
    )


def discover_connection(
    server: str | None = None, kubeconfig: str | None = None, environ: Mapping[str, str] | None = None
) -> Connection:
    """An explicit server URL, else a kubeconfig (flag or $KUBECONFIG), else in-cluster, else ~/.kube/config."""
    env = dict(environ or {})
    if server:
        return Connection(server=server.rstrip("/"), token=env.get("CRAWLJOB_KUBE_TOKEN") or None)
    if kubeconfig or env.get("KUBECONFIG"):
        return connection_from_kubeconfig(kubeconfig or env["KUBECONFIG"])
    if env.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").exists():
        return connection_in_cluster(
            host=env["KUBERNETES_SERVICE_HOST"], port=env.get("KUBERNETES_SERVICE_PORT", "443")
        )
    home_config = Path.home() / ".kube" / "config"
    if home_config.exists():
        return connection_from_kubeconfig(home_config)
    raise ValueError("no Kubernetes API configured: pass --kube-server or --kubeconfig, or run in a cluster")


def _error_for(status: int, text: str) -> KubeError:
    try:
        message = str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        message = text
    message = message[:500]
    if status == 404:
        return NotFound(status, message)
    if status == 409:
        return Conflict(status, message)
    if status in (400, 422):
        return Invalid(status, message)
    if status == 429 or status >= 500:
        return Unavailable(status, message)
    return KubeError(status, message)


class KubeClient:
    """Async Kubernetes REST client. Use as ``async with KubeClient(connection) as kube:``."""

    def __init__(self, connection: Connection, timeout: float = 10.0, user_agent: str = "crawljob") -> None:
        self.connection = connection
        self.timeout = timeout
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is None:
            headers = {"Accept": "application/json", "User-Agent": self.user_agent}
            connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context(), limit=64)
            self._session = aiohttp.ClientSession(
                base_url=None, headers=headers, connector=connector, raise_for_status=False
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("KubeClient is not open")
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        """Per request, not per session: a kubeconfig's exec/OIDC token is renewed when it expires."""
        token = self.connection.bearer()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def request(
        self,
        method: str,
        path: str,
        body: Body | list[Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Body:
        """One API call; the decoded JSON answer, or a KubeError subclass."""
        url = self.connection.server + path
        data = json.dumps(body).encode() if body is not None else None
        headers = self._auth_headers()
        if data is not None:
            headers["Content-Type"] = content_type
        try:
            async with self.session.request(
                method,
                url,
                data=data,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise _error_for(response.status, text)
                result: Body = json.loads(text) if text else {}
                return result
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(
                0, f"cannot reach the Kubernetes API at {self.connection.server}: {exc!r}"
            ) from exc

    async def create(
        self,
        resource: Resource,
        namespace: str,
        body: Body,
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> Body:
        """POST *body*; with *dry_run* the server validates and checks it against storage, storing nothing."""
        params = {"dryRun": "All"} if dry_run else None
        return await self.request("POST", resource.path(namespace), body, params=params, timeout=timeout)

    async def get(self, resource: Resource, namespace: str, name: str, timeout: float | None = None) -> Body:
        return await self.request("GET", resource.path(namespace, name), timeout=timeout)

    async def patch(
        self, resource: Resource, namespace: str, name: str, patch: Body, subresource: str | None = None
    ) -> Body:
        return await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            patch,
            content_type="application/merge-patch+json",
        )

    async def delete(
        self, resource: Resource, namespace: str, name: str, propagation: str = "Background"
    ) -> Body:
        return await self.request(
            "DELETE",
            resource.path(namespace, name),
            {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
        )

    async def list(
        self, resource: Resource, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[Body]:
        """List objects; label selectors are sent *and* checked here (the emulator ignores them)."""
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        answer = await self.request("GET", resource.path(namespace), params=params)
        items: list[Body] = answer.get("items") or []
        if labels:
            items = [item for item in items if _labels_match(item, labels)]
        return items

    async def watch(
        self, resource: Resource, namespace: str | None, timeout_seconds: int = 300
    ) -> AsyncIterator[Body]:
        """Stream watch events ({"type", "object"}) until the server closes the stream."""
        params = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
        url = self.connection.server + resource.path(namespace)
        try:
            async with self.session.get(
                url,
                params=params,
                headers=self._auth_headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30),
            ) as response:
                if response.status >= 400:
                    raise _error_for(response.status, await response.text())
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(0, f"watch of {resource.plural} interrupted: {exc!r}") from exc

    async def ping(self) -> None:
        """Raise Unavailable unless the API answers its version endpoint."""
        await self.request("GET", "/version", timeout=min(self.timeout, 3.0))


def _labels_match(obj: Body, labels: Mapping[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(key) == value for key, value in labels.items())
