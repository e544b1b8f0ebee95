"""Query parameters declared once: each reads its value from a request and describes itself to the OpenAPI
document, so the served description cannot drift from what the handlers accept."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from coordinator.api.http import HttpError, query_int, query_list, query_uuid


@dataclass(frozen=True)
class Query:
    """An optional text query parameter (`?name=value`)."""

    name: str
    description: str = ""
    max_length: int | None = None
    enum: Sequence[str] = ()

    def schema(self) -> dict[str, Any]:
        """The parameter's JSON schema in the OpenAPI document."""
        schema: dict[str, Any] = {"type": "string"}
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI parameter object."""
        return {"name": self.name, "in": "query", "required": False, "schema": self.schema(),
                **({"description": self.description} if self.description else {})}

    def read(self, request: Request) -> str | None:
        """The value sent, or None; one outside `enum` is a 422 naming the parameter."""
        value = request.query_params.get(self.name)
        if value and self.enum and value not in self.enum:
            raise HttpError(422, f"{self.name}: must be one of {', '.join(self.enum)}; got {value!r}",
                            field=self.name)
        return value


@dataclass(frozen=True)
class IntQuery(Query):
    """An integer within [low, high]; a value outside, or not an integer, is a 422 naming the parameter."""

    default: int = 0
    low: int = 0
    high: int = 2**62

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high, "default": self.default}

    def value(self, request: Request) -> int:
        """The value sent, or the default."""
        return query_int(request, self.name, self.default, self.low, self.high)


@dataclass(frozen=True)
class UuidQuery(Query):
    """A UUID (422 naming the parameter when it is not one)."""

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "uuid"}

    def value(self, request: Request) -> uuid.UUID | None:
        """The UUID sent, or None."""
        return query_uuid(request, self.name)


@dataclass(frozen=True)
class ListQuery(Query):
    """Several values, comma-separated or the parameter repeated (`?status=failed,timeout`)."""

    item: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        item = dict(self.item or {"type": "string"})
        if self.enum:
            item["enum"] = list(self.enum)
        return {"type": "array", "items": item}

    def values(self, request: Request) -> list[str]:
        """Every value sent (none: an empty list)."""
        return query_list(request, self.name)


@dataclass(frozen=True)
class FlagQuery(Query):
    """A switch: `1` or `true` turns it on."""

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def on(self, request: Request) -> bool:
        """Whether the switch was turned on."""
        return request.query_params.get(self.name) in ("1", "true")
