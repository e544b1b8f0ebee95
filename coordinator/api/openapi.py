"""The OpenAPI 3.1 document, derived from the endpoint table, its query parameters and the pydantic request schemas."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from coordinator.api.auth import Access
from coordinator.api.routing import Endpoint

ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"type": "string"}, "field": {"type": "string"}}}
"""The one error shape of every 4xx and 5xx answer."""
TAGS = {"tasks": "Submit, list, follow and act on tasks",
        "workers": "Agents enroll and work; operators command",
        "services": "Pause, resume and limit services",
        "files": "Task inputs and outputs",
        "stats": "Dashboards, health, audit and metrics",
        "probes": "Liveness and readiness for service managers and orchestrators",
        "llm-scheduler": "The LLM scheduler's model registry and health, served as it was",
        "aiflow": "The AIFlow gateway's submissions and health, served as they were"}
"""Each module's Api tag, in the order the docs list them."""


def _model_schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """A reference to the model's schema, which is added (with the models it uses) to `schemas`."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _request_body(e: Endpoint, schemas: dict[str, Any]) -> dict[str, Any] | None:
    """The requestBody object: the JSON body (one of several forms, where the route takes several) and any
    other media types."""
    content: dict[str, Any] = {}
    if e.body is not None:
        forms = [_model_schema(m, schemas) for m in (e.body, *e.also)]
        content["application/json"] = {"schema": forms[0] if len(forms) == 1 else {"oneOf": forms}}
    for media_type, schema in (e.content or {}).items():
        content[media_type] = {"schema": schema}
    if not content:
        return None
    return {"required": e.body_required, "content": content}


def _answer(e: Endpoint, schemas: dict[str, Any]) -> dict[str, Any]:
    """The response object of the route's success status."""
    if e.returns is None:
        raise ValueError(f"{e.method} {e.path}: no answer schema (returns=...)")
    if isinstance(e.returns, dict):
        return {"description": "OK", "content": e.returns}
    forms = [_model_schema(m, schemas) for m in (e.returns if isinstance(e.returns, tuple) else (e.returns,))]
    schema = forms[0] if len(forms) == 1 else {"oneOf": forms}
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def openapi_document(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    """Paths, parameters, request bodies and security of every endpoint."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for e in endpoints:
        op: dict[str, Any] = {"summary": e.summary, "operationId": e.handler.__name__, "tags": [e.tag],
                              "responses": {str(e.status): _answer(e, schemas),
                                            "4XX": {"description": "bad request, refused, not found or in conflict",
                                                    **error},
                                            "503": {"description": "Redis or PostgreSQL unavailable; retry", **error}}}
        for code, schema in (e.answers or {}).items():
            op["responses"][str(code)] = {"description": "per-event outcomes",
                                          "content": {"application/json": {"schema": schema}}}
        path = re.sub(r"{(\w+):\w+}", r"{\1}", e.path)  # Starlette's {name:path} is OpenAPI's {name}
        params = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "string", **({"format": "uuid"} if p.endswith("_id") else {"minLength": 1})}}
                  for p in re.findall(r"{(\w+)}", path)]
        params += [q.openapi() for q in e.query]
        if params:
            op["parameters"] = params
        if e.method != "GET":
            body = _request_body(e, schemas)
            if body is not None:
                op["requestBody"] = body
        if e.access != Access.PUBLIC:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Access: {e.access.value}"
        paths.setdefault(path, {})[e.method.lower()] = op
    tags = [{"name": name, "description": description} for name, description in TAGS.items()]
    return {"openapi": "3.1.0", "info": {"title": "AIDD coordinator", "version": version}, "tags": tags,
            "paths": paths,
            "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
