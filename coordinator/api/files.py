"""File endpoints: submission with files (multipart), a task's file list, the agent's inputs and output uploads,
and the signed downloads of the local store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import StreamingResponse

from coordinator.api.answers import BINARY, AttemptFiles, StoredFile, TaskFiles
from coordinator.api.auth import Access
from coordinator.api.http import HttpError, load_json, parse
from coordinator.api.params import Query
from coordinator.api.routing import Api, Ctx
from coordinator.api.uploads import receive_body, receive_form
from coordinator.errors import Forbidden
from coordinator.files import NamedFile
from coordinator.schemas import TaskSpec
from coordinator.storage import LocalStore, ObjectNotFound
from coordinator.storage.names import check_name

api = Api("files")

EXPIRES = Query("expires", "when the link expires (unix seconds), as signed")
SIGNATURE = Query("signature", "HMAC-SHA256 of the key and expiry")
RAW_FILE = {"application/octet-stream": {"type": "string", "format": "binary"}}


def is_multipart(request: Request) -> bool:
    """Whether the body is multipart/form-data (a submission with files)."""
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def task_field(fields: dict[str, bytes]) -> TaskSpec:
    """The task of our own multipart form: its `task` field, holding one task as JSON."""
    if "task" not in fields:
        raise HttpError(422, "task: missing (a form field holding the task as JSON)", field="task")
    data = load_json(fields["task"], "task")
    if not isinstance(data, dict):
        raise HttpError(422, "task: must be one task (a JSON object); submit batches as JSON", field="task")
    return parse(TaskSpec, data, prefix="task")


async def submit_with_files(request: Request, ctx: Ctx, check: Callable[[Ctx, list[TaskSpec]], None],
                            text_fields: Sequence[str] = ("task",),
                            to_spec: Callable[[dict[str, bytes]], TaskSpec] = task_field) -> uuid.UUID:
    """A multipart/form-data submission: text fields that `to_spec` makes a task of, and file parts.

    Files are streamed to temporary files, then stored under `tasks/{id}/inputs/NAME`; only then is the task
    created (with those keys appended to its input_files). Any failure leaves neither task nor files.
    Returns the new task's id.
    """
    settings, files = ctx.settings, ctx.coordinator.files
    received = await receive_form(request, dict.fromkeys(text_fields, settings.max_body_bytes),
                                  settings.max_file_bytes)
    try:
        spec = to_spec(received.fields)
        check(ctx, [spec])
        await files.check_spec(spec, "task.", [f.name for f in received.files])
        task_id = uuid.uuid4()
        keys = await files.store_inputs(task_id, [NamedFile(f.name, f.file, f.size) for f in received.files])
        spec = spec.model_copy(update={"input_files": [*spec.input_files, *keys]})
        try:
            await ctx.coordinator.tasks.submit([spec], ctx.caller.name, ids=[task_id])
        except BaseException:
            await files.discard(task_id)
            raise
    finally:
        received.close()
    return task_id


@api.route("GET", "/api/v1/tasks/{task_id}/files", Access.READ,
           "A task's inputs and each attempt's outputs, with sizes and presigned download URLs", returns=TaskFiles)
async def task_files(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.files.task_files(request.path_params["task_id"], str(request.base_url))


@api.route("GET", "/api/v1/workers/{worker_id}/attempts/{attempt_id}/files", Access.WORKER,
           "For the worker's running attempt: input download URLs, output globs and the upload URL",
           returns=AttemptFiles)
async def attempt_files(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.files.attempt_files(request.path_params["worker_id"],
                                                     request.path_params["attempt_id"], str(request.base_url))


@api.route("PUT", "/api/v1/workers/{worker_id}/attempts/{attempt_id}/outputs/{path:path}", Access.WORKER,
           "Upload one output file of the worker's running attempt (raw body, at most max_file_bytes)", status=201,
           content=RAW_FILE, returns=StoredFile)
async def put_output(request: Request, ctx: Ctx) -> Any:
    files = ctx.coordinator.files
    worker_id, attempt_id = request.path_params["worker_id"], request.path_params["attempt_id"]
    path = check_name(request.path_params["path"], "path")
    await files.current_attempt(worker_id, attempt_id)  # refuse a stale attempt before reading its body
    spooled = await receive_body(request, path, ctx.settings.max_file_bytes)
    try:
        return await files.put_output(worker_id, attempt_id, path, spooled.file, spooled.size)
    finally:
        spooled.file.close()


@api.route("GET", "/api/v1/files/{key:path}", Access.PUBLIC,
           "Download a file of the local store (the URL carries its own expiry and signature)",
           query=(EXPIRES, SIGNATURE), returns=BINARY)
async def download(request: Request, ctx: Ctx) -> Any:
    store, key = ctx.coordinator.files.store, request.path_params["key"]
    if not isinstance(store, LocalStore):
        raise ObjectNotFound(key)
    if not store.verify(key, EXPIRES.read(request) or "", SIGNATURE.read(request) or ""):
        raise Forbidden("download link is invalid or has expired; ask for a new one")
    info = await asyncio.to_thread(store.stat, key)
    if info is None:
        raise ObjectNotFound(key)
    chunks = await asyncio.to_thread(store.get, key)
    disposition = f"attachment; filename*=UTF-8''{quote(key.rpartition('/')[2])}"
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"content-length": str(info.size), "content-disposition": disposition})
