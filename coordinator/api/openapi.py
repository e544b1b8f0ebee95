"""The OpenAPI 3.1 document, derived from the endpoint table and the pydantic request schemas."""

from __future__ import annotations

import re
from typing import Any

from coordinator.api.auth import Access
from coordinator.api.routing import Endpoint


def openapi_document(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    """Paths, parameters, request bodies and security of every endpoint."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for e in endpoints:
        op: dict[str, Any] = {"summary": e.summary, "operationId": e.handler.__name__,
                              "responses": {str(e.status): {"description": "OK"},
                                            "4XX": {"description": "{\"error\": ..., \"field\": ...}"}}}
        path = re.sub(r"{(\w+):\w+}", r"{\1}", e.path)  # Starlette's {name:path} is OpenAPI's {name}
        params = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "string", **({"format": "uuid"} if p.endswith("_id") else {})}}
                  for p in re.findall(r"{(\w+)}", path)]
        if params:
            op["parameters"] = params
        if e.body is not None and e.method != "GET":
            schema = e.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[e.body.__name__] = schema
            op["requestBody"] = {"content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{e.body.__name__}"}}}}
        if e.access != Access.PUBLIC:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Access: {e.access.value}"
        paths.setdefault(path, {})[e.method.lower()] = op
    return {"openapi": "3.1.0", "info": {"title": "AIDD coordinator", "version": version}, "paths": paths,
            "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
