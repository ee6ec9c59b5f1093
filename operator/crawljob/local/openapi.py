"""The OpenAPI documents an API server publishes for a CRD (v2 and v3), for `kubectl explain` and
`kubectl create -f`'s client-side validation against the emulator.

Built from the chart's CRD (the single source) the way kube-apiserver builds them: the CRD's
structural schema under `io.<reversed group>.<version>.<Kind>` with its group/version/kind, its
List, and ObjectMeta (with its descriptions, from the `kubernetes` package's models). The v3
document also has the resource's paths: `kubectl explain` finds a resource's schema through them,
and kubectl sees there that the server validates fields itself (`fieldValidation`, which the
emulator implements for CRDs with `unknown_fields`), so it needs no protobuf v2 document.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

Body = dict[str, Any]
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_KEPT = ("description", "type", "format", "enum", "required", "minimum", "maximum", "minLength", "maxLength",
         "pattern", "minItems", "maxItems", "default", "x-kubernetes-preserve-unknown-fields",
         "x-kubernetes-int-or-string")  # fmt: skip


def _definition_name(group: str, version: str, kind: str) -> str:
    return ".".join([*reversed(group.split(".")), version, kind])


def _schema(node: Mapping[str, Any], v2: bool) -> Body:
    """A CRD schema node as published: kept keywords, nested nodes converted; in v2 a node that
    preserves unknown fields has no type (so kubectl's validation does not reject them)."""
    out: Body = {key: copy.deepcopy(node[key]) for key in _KEPT if key in node}
    if "properties" in node:
        out["properties"] = {name: _schema(child, v2) for name, child in node["properties"].items()}
    if isinstance(node.get("items"), Mapping):
        out["items"] = _schema(node["items"], v2)
    if isinstance(node.get("additionalProperties"), Mapping):
        out["additionalProperties"] = _schema(node["additionalProperties"], v2)
    if v2 and node.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("type", None)
        out.pop("properties", None)
    return out


_PRIMITIVES: dict[str, Body] = {
    "str": {"type": "string"},
    "int": {"type": "integer", "format": "int64"},
    "bool": {"type": "boolean"},
    "float": {"type": "number"},
    "datetime": {"type": "string", "format": "date-time"},
    "object": {"type": "object"},
}
OBJECT_META_DESCRIPTION = (
    "ObjectMeta is metadata that all persisted resources must have, which includes all objects "
    "users must create."
)


def _field_description(model: Any, attribute: str) -> str:
    """The field's description from the generated model's property docstring."""
    text = getattr(getattr(model, attribute, None), "__doc__", None) or ""
    parts = [part.strip() for part in text.split("\n\n")]
    body = [part for part in parts[1:] if part and not part.startswith(":return")]
    return " ".join(body).replace("  # noqa: E501", "").strip()


def _field_schema(type_name: str, ref_prefix: str, models: dict[str, Any]) -> Body:
    """A swagger-generated type string (`list[V1OwnerReference]`, `dict(str, str)`) as a schema."""
    if type_name.startswith("list["):
        return {"type": "array", "items": _field_schema(type_name[5:-1], ref_prefix, models)}
    if type_name.startswith("dict("):
        value = type_name[5:-1].split(",", 1)[1].strip()
        return {"type": "object", "additionalProperties": _field_schema(value, ref_prefix, models)}
    if type_name in _PRIMITIVES:
        return dict(_PRIMITIVES[type_name])
    from kubernetes import client

    models[type_name] = getattr(client, type_name)
    return {"$ref": f"{ref_prefix}{META}.{type_name.removeprefix('V1')}"}


def object_meta_definitions(ref_prefix: str) -> Body:
    """ObjectMeta, OwnerReference and ManagedFieldsEntry as the API server publishes them, from the
    `kubernetes` package's generated models (field types, JSON names and descriptions)."""
    from kubernetes import client  # lazily: only kubectl's OpenAPI requests need it

    models: dict[str, Any] = {"V1ObjectMeta": client.V1ObjectMeta}
    definitions: Body = {}
    while len(definitions) < len(models):
        for name, model in list(models.items()):
            key = f"{META}.{name.removeprefix('V1')}"
            if key in definitions:
                continue
            properties: Body = {}
            for attribute, type_name in model.openapi_types.items():
                schema = _field_schema(type_name, ref_prefix, models)
                description = _field_description(model, attribute)
                if description:
                    schema["description"] = description
                properties[model.attribute_map[attribute]] = schema
            description = OBJECT_META_DESCRIPTION if name == "V1ObjectMeta" else f"{name.removeprefix('V1')}."
            definitions[key] = {"description": description, "type": "object", "properties": properties}
    return definitions


def crd_definitions(crd: Mapping[str, Any], version: Mapping[str, Any], ref_prefix: str, v2: bool) -> Body:
    """The CRD's kind and its List for one served version."""
    spec = crd["spec"]
    group, names = spec["group"], spec["names"]
    name = _definition_name(group, version["name"], names["kind"])
    schema = _schema(version["schema"]["openAPIV3Schema"], v2)
    properties = schema.setdefault("properties", {})
    properties["metadata"] = {
        "$ref": f"{ref_prefix}{META}.ObjectMeta",
        "description": "Standard object's metadata. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    }
    list_kind = names.get("listKind") or names["kind"] + "List"
    gvk = {"group": group, "version": version["name"]}
    return {
        name: {**schema, "x-kubernetes-group-version-kind": [{**gvk, "kind": names["kind"]}]},
        _definition_name(group, version["name"], list_kind): {
            "description": f"{list_kind} is a list of {names['kind']}",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string", "description": "APIVersion of this list."},
                "kind": {"type": "string", "description": "Kind of this list."},
                "items": {
                    "type": "array",
                    "description": f"List of {names['plural']}.",
                    "items": {"$ref": ref_prefix + name},
                },
                "metadata": {"$ref": f"{ref_prefix}{META}.ListMeta"},
            },
            "x-kubernetes-group-version-kind": [{**gvk, "kind": list_kind}],
        },
        f"{META}.ListMeta": {
            "description": "ListMeta describes metadata that synthetic resources must have.",
            "type": "object",
            "properties": {
                "continue": {"type": "string"},
                "remainingItemCount": {"type": "integer", "format": "int64"},
                "resourceVersion": {"type": "string"},
                "selfLink": {"type": "string"},
            },
        },
    }


def _served(crds: Iterable[Mapping[str, Any]]) -> Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    for crd in crds:
        for version in crd["spec"]["versions"]:
            if version.get("served", True) and (version.get("schema") or {}).get("openAPIV3Schema"):
                yield crd, version


def v2_document(crds: Iterable[Mapping[str, Any]]) -> Body:
    """`GET /openapi/v2`: a Swagger 2.0 document with every served CRD version's definitions."""
    definitions = object_meta_definitions("#/definitions/")
    for crd, version in _served(crds):
        definitions.update(crd_definitions(crd, version, "#/definitions/", v2=True))
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.26.4"},
        "paths": {},
        "definitions": definitions,
    }


def _v3_paths(crd: Mapping[str, Any], version: Mapping[str, Any], ref: str) -> Body:
    spec = crd["spec"]
    group, names = spec["group"], spec["names"]
    scope = "/namespaces/{namespace}" if spec.get("scope") == "Namespaced" else ""
    base = f"/apis/{group}/{version['name']}{scope}/{names['plural']}"
    gvk = {"group": group, "version": version["name"], "kind": names["kind"]}
    field_validation = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}]

    def operation(schema: str, validates: bool) -> Body:
        answer = {"content": {"application/json": {"schema": {"$ref": ref + schema}}}}
        return {
            "x-kubernetes-group-version-kind": gvk,
            "parameters": field_validation if validates else [],
            "responses": {"200": answer},
        }

    kind = _definition_name(group, version["name"], names["kind"])
    list_kind = _definition_name(group, version["name"], names.get("listKind") or names["kind"] + "List")
    return {
        base: {"get": operation(list_kind, False), "post": operation(kind, True)},
        base + "/{name}": {
            "get": operation(kind, False),
            "put": operation(kind, True),
            "patch": operation(kind, True),
            "delete": operation(kind, False),
        },
    }


def unknown_fields(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    """Fields of *value* that *schema* (a CRD's openAPIV3Schema) does not declare, as a server's
    strict field validation names them (`.spec.foo`); metadata is the server's own."""
    if not isinstance(value, Mapping) or schema.get("x-kubernetes-preserve-unknown-fields"):
        if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
            return [found for index, item in enumerate(value)
                    for found in unknown_fields(schema["items"], item, f"{path}[{index}]")]  # fmt: skip
        return []
    if isinstance(schema.get("additionalProperties"), Mapping):
        extra = schema["additionalProperties"]
        return [
            found for key, item in value.items() for found in unknown_fields(extra, item, f"{path}.{key}")
        ]
    properties = schema.get("properties") or {}
    found: list[str] = []
    for key, item in value.items():
        if path == "" and key in ("apiVersion", "kind", "metadata"):
            continue
        if key not in properties:
            found.append(f"{path}.{key}")
        else:
            found += unknown_fields(properties[key], item, f"{path}.{key}")
    return found


def v3_group_document(crds: Iterable[Mapping[str, Any]], group: str, version_name: str) -> Body | None:
    """`GET /openapi/v3/apis/GROUP/VERSION`: the group version's schemas, or None if none is served."""
    ref = "#/components/schemas/"
    schemas: Body = {}
    paths: Body = {}
    for crd, version in _served(crds):
        if crd["spec"]["group"] == group and version["name"] == version_name:
            schemas.update(crd_definitions(crd, version, ref, v2=False))
            paths.update(_v3_paths(crd, version, ref))
    if not schemas:
        return None
    schemas.update(object_meta_definitions(ref))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def v3_root(crds: Iterable[Mapping[str, Any]]) -> Body:
    """`GET /openapi/v3`: where each group version's document is (with its content hash)."""
    crds = list(crds)
    paths: Body = {}
    for crd, version in _served(crds):
        group, name = crd["spec"]["group"], version["name"]
        document = v3_group_document(crds, group, name)
        digest = hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()[:64].upper()
        paths[f"apis/{group}/{name}"] = {
            "serverRelativeURL": f"/openapi/v3/apis/{group}/{name}?hash={digest}"
        }
    return {"paths": paths}
