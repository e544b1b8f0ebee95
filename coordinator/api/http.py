"""JSON in and out: bodies read with a size cap, parsed strictly, validated with a field path in errors."""

from __future__ import annotations

import json
import uuid
from contextvars import ContextVar
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from aiddwire import may_hold_long_integer
from coordinator.errors import AiddError

M = TypeVar("M", bound=BaseModel)
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being answered (set by `access.AccessLog`), written in error bodies."""


class HttpError(AiddError):
    """An error with its own status code (malformed JSON, body too large, bad query value)."""

    def __init__(self, status_code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status_code, self.field = status_code, field


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):  # asyncpg's own UUID subclass, which orjson does not know
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


class JSONResponse(Response):
    """orjson-encoded JSON (UUIDs and datetimes included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default, option=orjson.OPT_NON_STR_KEYS)


def error_response(exc: AiddError) -> JSONResponse:
    """The one error shape: {"error": "...", "field": "...", "request_id": "..."} with the error's status code."""
    body: dict[str, Any] = {"error": str(exc)}
    field = getattr(exc, "field", None)
    if field:
        body["field"] = field
    request_id = REQUEST_ID.get()
    if request_id:
        body["request_id"] = request_id
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def validation_error(exc: ValidationError, prefix: str = "") -> HttpError:
    """A 422 naming the first bad field, e.g. `tasks[3].priority: Input should be a valid integer`."""
    first = exc.errors()[0]
    path = prefix
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return HttpError(422, f"{path or 'body'}: {first['msg']}", field=path or "body")


async def read_json(request: Request, limit: int) -> Any:
    """The parsed body; 413 past `limit` bytes (checked while streaming), 400 when it is not JSON."""
    return load_json(await read_body(request, limit))


def load_json(raw: bytes | str, field: str | None = None) -> Any:
    """Parsed JSON (of the body, or of the form field `field`): a 400 when it is not JSON, a 422 naming the place
    of an integer outside -2**63 .. 2**64 - 1, which orjson would read as a float (its digits lost unseen)."""
    where = f"{field}: " if field else ""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"{where}malformed JSON: {exc}", field=field) from None
    text = raw.encode() if isinstance(raw, str) else raw
    if may_hold_long_integer(text):
        try:
            found = _long_integer(json.loads(text))
        except RecursionError:
            raise HttpError(400, f"{where}JSON nested too deeply", field=field) from None
        if found is not None:
            path, number = found
            path = ".".join(p for p in (field, path) if p) or "body"
            digits = str(number)
            shown = digits if len(digits) <= 40 else f"{digits[:30]}… ({len(digits.lstrip('-'))} digits)"
            raise HttpError(422, f"{path}: the integer {shown} is beyond 64 bits; send it as a string", field=path)
    return value


def _long_integer(value: Any) -> tuple[str, int] | None:
    """The first integer (in the text's order) outside orjson's range, and its path (`tasks[3].input_params.n`)."""
    todo: list[tuple[str, Any]] = [("", value)]
    while todo:
        path, item = todo.pop()
        if isinstance(item, dict):
            todo.extend(reversed([(f"{path}.{key}" if path else key, v) for key, v in item.items()]))
        elif isinstance(item, list):
            todo.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(item)]))
        elif type(item) is int and not -2**63 <= item < 2**64:
            return path, item
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 past `limit` bytes (checked while streaming)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    request.state.body_size = size
    return b"".join(chunks)


def parse(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate `data` as `model`, or raise a 422 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from None


async def body(request: Request, model: type[M], limit: int) -> M:
    """Read and validate a JSON body in one step."""
    return parse(model, await read_json(request, limit))


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high], or a 422 naming it."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(422, f"{name}: must be an integer, got {raw!r}", field=name) from None
    if not low <= value <= high:
        raise HttpError(422, f"{name}: must be between {low} and {high}, got {value}", field=name)
    return value


def query_uuid(request: Request, name: str) -> uuid.UUID | None:
    """A UUID query parameter, or a 422 naming it."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise HttpError(422, f"{name}: not a UUID: {raw!r}", field=name) from None


def query_list(request: Request, name: str) -> list[str]:
    """A comma-separated or repeated query parameter."""
    return [v for raw in request.query_params.getlist(name) for v in raw.split(",") if v]
