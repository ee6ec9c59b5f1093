"""kmock's KubernetesEmulator with the few API-server behaviours crawljob and kubectl rely on.

Kept in one small subclass (used by the tests and the local stack): uid, creationTimestamp,
resourceVersion and generation on objects, kind/apiVersion on lists, label selectors on lists, and
optimistic concurrency: a PATCH carrying `metadata.resourceVersion` is refused with 409 Conflict
when the object has changed since (kmock serves no PUT).
Product code never depends on these without handling them client-side too.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from crawljob import resource, sources
from crawljob.local import openapi, runner
from crawljob.operator import peering

_versions = itertools.count(1)
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


_FILTER = re.compile(r"^(\w+)\[\?\(@\.(\w+)==\"([^\"]*)\"\)\]$")


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    """A meta/v1 Status answer, as the API server sends errors."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return aiohttp.web.json_response(body, status=code)


def _field_selector_matches(selector: str, obj: dict[str, Any]) -> bool:
    """Equality field selectors (`involvedObject.name=x,metadata.namespace!=y`), as `kubectl describe`
    sends them for a resource's Events."""
    for term in filter(None, (part.strip() for part in selector.split(","))):
        negate = "!=" in term
        path, _, value = term.replace("!=", "=").replace("==", "=").partition("=")
        found = _json_path(obj, path)
        if (str(found if found is not None else "") == value) == negate:
            return False
    return True


def _json_path(obj: Any, path: str) -> Any:
    """The value at a simple dotted JSONPath (``.spec.source.bucket``), or None. A list step may
    filter on one field, as printer columns of conditions do: ``.status.conditions[?(@.type=="Ready")].status``.
    """
    for part in filter(None, re.split(r"\.(?![^\[]*\])", path)):
        selected = _FILTER.match(part)
        if selected:
            name, field, wanted = selected.groups()
            items = obj.get(name) if isinstance(obj, dict) else None
            obj = next(
                (item for item in items or [] if isinstance(item, dict) and item.get(field) == wanted), None
            )
            continue
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _human_age(timestamp: Any) -> str:
    try:
        then = datetime.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


def as_table(items: list[dict[str, Any]], columns: list[dict[str, Any]]) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of *items* with a CRD's printer columns, as the API server renders it."""
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    definitions += [
        {
            "name": column["name"],
            "type": column.get("type", "string"),
            "format": column.get("format", ""),
            "description": column.get("description", ""),
            "priority": column.get("priority", 0),
        }
        for column in columns
    ]
    rows = []
    for item in items:
        cells: list[Any] = [(item.get("metadata") or {}).get("name")]
        for column in columns:
            value = _json_path(item, column["jsonPath"])
            cells.append(_human_age(value) if column.get("type") == "date" and value else value)
        metadata = item.get("metadata") or {}
        rows.append(
            {
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": definitions,
        "rows": rows,
    }


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """KubernetesEmulator + object metadata bookkeeping + list kinds + label selectors + CRD tables."""

    # Printer columns of the registered CRDs, by "group/version/plural", for kubectl's Table requests.
    printer_columns: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)
    # The registered CRDs themselves, for the OpenAPI documents (`kubectl explain`, `create -f`).
    crds: list[dict[str, Any]] = attrs.field(factory=list)
    # Where the job runner keeps container output (runner.pod_log_path), for `pods/NAME/log`.
    pod_log_dir: Path | None = None
    # Their schemas by "group/version/plural", for strict field validation (`?fieldValidation=Strict`).
    schemas: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    # What GET /version answers as (major, minor); None: kmock's own (1.26). ("1", "20") makes the
    # operator take the path of servers without Indexed Jobs (one Job per shard).
    server_version: tuple[str, str] | None = None

    # kmock matches every request against its whole request log (O(log length) per request, ~1 ms
    # per logged request), so long runs slow to a crawl. Finished requests are dropped from the log
    # (requests still in flight must stay: kmock looks them up there). False keeps the whole log
    # (for tests asserting on it).
    trim_request_log: bool = True
    _finished_requests: set[int] = attrs.field(factory=set)
    # Writes to named objects, one at a time: a resourceVersion precondition is checked and the
    # patch applied with no other write in between.
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)

    def _trim_finished_requests(self) -> None:
        finished = self._finished_requests
        if not self.trim_request_log or not finished:
            return
        self._requests[:] = [request for request in self._requests if id(request) not in finished]
        for payload in self._payloads:
            payload._requests[:] = [request for request in payload._requests if id(request) not in finished]
        # Trimmed requests may now be freed and their ids reused: forget them.
        finished.clear()

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self._trim_finished_requests()
        if request.action == kmock.action.CREATE and request.params.get("dryRun") == "All":
            self._finished_requests.add(id(request))
            return await self._dry_run_create(request)
        try:
            return await self._handle_with_metadata(request)
        finally:
            self._finished_requests.add(id(request))

    async def _handle_with_metadata(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.url.path.startswith("/openapi/"):
            return self._serve_openapi(request.url.path)
        if (
            request.subresource == "log"
            and request.resource is not None
            and request.resource.plural == "pods"
        ):
            return self._serve_pod_log(request)
        refused = self._strict_field_validation(request)
        if refused is not None:
            return refused
        if request.params.get("dryRun") == "All" and request.resource is not None:
            return await self._dry_run(request)
        if (
            request.resource is not None
            and request.action == kmock.action.UPDATE
            and request.name is not None
        ):
            async with self._write_lock:
                conflict = self._stale_write(request)
                return conflict if conflict is not None else await self._stored(request)
        return await self._stored(request)

    def _stale_write(self, request: kmock.Request) -> aiohttp.web.StreamResponse | None:
        """409 Conflict when the write names a resourceVersion the object no longer has, as the API
        server answers it (a precondition, not a field: the emulator stores its own version)."""
        data = request.data
        expected = (data.get("metadata") or {}).get("resourceVersion") if isinstance(data, dict) else None
        current = self._current(request)
        if expected is None or current is None:
            return None
        if str((current.get("metadata") or {}).get("resourceVersion")) == str(expected):
            return None
        requested = request.resource
        assert requested is not None
        qualified = f"{requested.plural}.{requested.group}" if requested.group else requested.plural
        return _status(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {qualified} "{request.name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
        )

    async def _stored(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """The request served by kmock, with the object metadata an API server keeps."""
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            metadata = data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                metadata.setdefault("uid", str(uuid.uuid4()))
                metadata.setdefault("creationTimestamp", _now())
                metadata["generation"] = 1
                metadata["resourceVersion"] = str(next(_versions))
                if request.namespace and not metadata.get("namespace"):
                    metadata["namespace"] = request.namespace
            elif request.action == kmock.action.UPDATE and request.name is not None:
                metadata["resourceVersion"] = str(next(_versions))
                if request.subresource is None and "spec" in data:
                    current = self._current(request)
                    if current is not None:
                        generation = int((current.get("metadata") or {}).get("generation") or 1)
                        metadata["generation"] = generation + 1
        return await super()._handle(request)

    async def _dry_run_create(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """A server-side dry run: the object as it would be stored (409 if the name exists), nothing stored."""
        data = dict(request.data) if isinstance(request.data, dict) else {}
        metadata = dict(data.get("metadata") or {})
        namespace = request.namespace or metadata.get("namespace")
        async with self._lock:
            existing = self._lookup(request.resource, namespace, metadata.get("name"))
        if existing is not None and not existing.deleted:
            return _status(409, "AlreadyExists", f"{metadata.get('name')} already exists")
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1, namespace=namespace)
        return aiohttp.web.json_response({**data, "metadata": metadata}, status=201)

    def _serve_openapi(self, path: str) -> aiohttp.web.StreamResponse:
        """/openapi/v2, /openapi/v3 and /openapi/v3/apis/GROUP/VERSION for the registered CRDs."""
        document: dict[str, Any] | None = None
        if path == "/openapi/v2":
            document = openapi.v2_document(self.crds)
        elif path == "/openapi/v3":
            document = openapi.v3_root(self.crds)
        elif path.startswith("/openapi/v3/apis/") and path.count("/") == 5:
            group, version = path.split("/")[4:6]
            document = openapi.v3_group_document(self.crds, group, version)
        if document is None:
            return _status(404, "NotFound", f"no OpenAPI document at {path}")
        return aiohttp.web.json_response(document)

    def _serve_pod_log(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """GET pods/NAME/log[?container=C&tailLines=N]: the output the job runner kept, as a kubelet
        would answer it through the API server."""
        pod = self._lookup(request.resource, request.namespace, request.name)
        if pod is None or pod.deleted:
            return _status(404, "NotFound", f'pods "{request.name}" not found')
        containers = (pod.raw.get("spec") or {}).get("containers") or [{"name": "worker"}]
        container = request.params.get("container") or str(containers[0].get("name"))
        path = (
            runner.pod_log_path(self.pod_log_dir, str(request.namespace), str(request.name), container)
            if self.pod_log_dir is not None
            else None
        )
        if path is None or not path.exists():
            message = (
                f'container "{container}" in pod "{request.name}" is waiting to start: ContainerCreating'
            )
            return _status(400, "BadRequest", message)
        text = path.read_text(errors="replace")
        tail = request.params.get("tailLines")
        if tail and tail.isdigit():
            text = "".join(text.splitlines(keepends=True)[-int(tail) :])
        return aiohttp.web.Response(text=text, content_type="text/plain")

    def _strict_field_validation(self, request: kmock.Request) -> aiohttp.web.StreamResponse | None:
        """A 400 naming the unknown fields of a write with fieldValidation=Strict (kubectl's default
        since the OpenAPI v3 document says the server validates), as a real server answers it."""
        requested = request.resource
        if requested is None or request.params.get("fieldValidation", "").lower() != "strict":
            return None
        if request.action not in (kmock.action.CREATE, kmock.action.UPDATE) or request.subresource:
            return None
        schema = self.schemas.get(f"{requested.group}/{requested.version}/{requested.plural}")
        unknown = openapi.unknown_fields(schema, request.data) if schema else []
        if not unknown:
            return None
        kind = getattr(self.resources.get(requested), "kind", None) or requested.plural
        message = (
            f'{kind} in version "{requested.version}" cannot be handled as a {kind}: strict decoding '
            "error: " + ", ".join(f'unknown field "{field.lstrip(".")}"' for field in unknown)
        )
        return _status(400, "BadRequest", message)

    async def _dry_run(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """A write with ?dryRun=All answers what it would store and changes nothing."""
        current = self._current(request) if request.name is not None else None
        if request.action == kmock.action.CREATE:
            return aiohttp.web.json_response(request.data, status=201)
        if current is None:
            return _status(404, "NotFound", f"{request.name} not found")
        return aiohttp.web.json_response(current)

    async def _serve_server_version(self, request: kmock.Request) -> Any:
        answer = dict(await super()._serve_server_version(request))  # type: ignore[arg-type]
        if self.server_version is not None:
            major, minor = self.server_version
            answer.update(major=major, minor=minor, gitVersion=f"v{major}.{minor}.0")
        return answer

    async def _serve_version(self, request: kmock.Request) -> Any:
        """APIResourceList as a real server lists it: a subresource (crawljobs/status) has no short
        names, categories or singular name of its own (else kubectl finds two resources by each)."""
        answer = dict(await super()._serve_version(request))  # type: ignore[arg-type]
        for entry in answer["resources"]:
            if "/" in entry["name"]:
                entry.update(singularName="", shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return answer

    def _current(self, request: kmock.Request) -> dict[str, Any] | None:
        obj = self._lookup(request.resource, request.namespace, request.name)
        return None if obj is None or obj.deleted else dict(obj.raw)

    # kmock finds the object of a single-object request by scanning all objects (O(objects) per
    # request); these serve the same answers by a direct key lookup, so thousands of objects stay fast.
    def _lookup(self, resource_: Any, namespace: str | None, name: str | None) -> Any:
        store: dict[Any, Any] = self._objects._objects
        return store.get((resource_, namespace, name))

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        async with self._lock:
            obj = self._lookup(request.resource, request.namespace, request.name)
        if obj is None or obj.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_update(self, request: kmock.Request) -> Any:
        return await self._last_version(request)

    async def _serve_delete(self, request: kmock.Request) -> Any:
        return await self._last_version(request)

    async def _last_version(self, request: kmock.Request) -> Any:
        """The addressed object's latest version (deleted ones too), or a 404."""
        async with self._lock:
            obj = self._lookup(request.resource, request.namespace, request.name)
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.last.raw

    async def _serve_create(self, request: kmock.Request) -> Any:
        metadata = (request.data or {}).get("metadata") or {}
        namespace = request.namespace or metadata.get("namespace")
        async with self._lock:
            obj = self._lookup(request.resource, namespace, request.name or metadata.get("name"))
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_list(self, request: kmock.Request) -> Any:
        answer = dict(await super()._serve_list(request))  # type: ignore[arg-type]
        requested = request.resource
        info = self.resources.get(requested) if requested is not None else None
        kind = getattr(info, "kind", None)
        if kind and requested is not None:
            answer["kind"] = f"{kind}List"
            group = requested.group
            answer["apiVersion"] = f"{group}/{requested.version}" if group else requested.version
        answer["metadata"] = {"resourceVersion": str(next(_versions))}
        selector = request.params.get("labelSelector")
        if selector:
            answer["items"] = [
                item
                for item in answer["items"]
                if _selector_matches(selector, (item.get("metadata") or {}).get("labels") or {})
            ]
        fields = request.params.get("fieldSelector")
        if fields:
            answer["items"] = [item for item in answer["items"] if _field_selector_matches(fields, item)]
        if requested is not None and "as=Table" in request.headers.get("Accept", ""):
            columns = self.printer_columns.get(f"{requested.group}/{requested.version}/{requested.plural}")
            if columns is not None:
                return as_table(answer["items"], columns)
        return answer


def register_crawljob_crd(emulator: Emulator) -> None:
    """Declare the CrawlJob and CrawlSource resources in the emulator from the chart's CRDs."""
    register_crd(emulator, resource.crd_path())
    register_crd(emulator, sources.crd_path())


def register_crd(emulator: Emulator, path: Path) -> None:
    """Declare one custom resource in the emulator from a chart CRD file (the single source)."""
    crd = yaml.safe_load(path.read_text())
    names = crd["spec"]["names"]
    emulator.crds.append(crd)
    emulator.objects[CRDS, None, crd["metadata"]["name"]] = crd
    for version in crd["spec"]["versions"]:
        key = f"{crd['spec']['group']}/{version['name']}/{names['plural']}"
        emulator.resources[key] = kmock.ResourceInfo(
            kind=names["kind"],
            singular=names.get("singular"),
            namespaced=crd["spec"]["scope"] == "Namespaced",
            shortnames=set(names.get("shortNames", [])),
            categories=set(names.get("categories", [])),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
            subresources=set((version.get("subresources") or {}).keys()),
        )
        emulator.printer_columns[key] = list(version.get("additionalPrinterColumns") or [])
        emulator.schemas[key] = version["schema"]["openAPIV3Schema"]


def register_peering_crds(emulator: Emulator) -> None:
    """Declare kopf's KopfPeering and ClusterKopfPeering (as the chart's CRD: no status subresource)."""
    for kind, plural, namespaced in (
        (peering.KIND, peering.PLURAL, True),
        (peering.CLUSTER_KIND, peering.CLUSTER_PLURAL, False),
    ):
        emulator.resources[f"{peering.GROUP}/{peering.VERSION}/{plural}"] = kmock.ResourceInfo(
            kind=kind,
            singular=kind.lower(),
            namespaced=namespaced,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )


def make_emulator() -> Emulator:
    """An emulator with the built-in resources (jobs, pods, events, …), the CrawlJob CRD and kopf's
    peering resources (for operators run with --peering)."""
    emulator = Emulator()
    emulator.resources.load_bundled()
    register_crawljob_crd(emulator)
    register_peering_crds(emulator)
    return emulator


@asynccontextmanager
async def serve_emulator(
    host: str = "127.0.0.1", port: int | None = None
) -> AsyncIterator[tuple[Emulator, str]]:
    """Run the emulator on loopback; yields it and its base URL (no trailing slash)."""
    emulator = make_emulator()
    async with emulator, kmock.Server(emulator, host=host, port=port) as server:
        yield emulator, str(server.url).rstrip("/")
