"""The client commands (`aidd tasks`, `submit`, `show`, `wait`, `results`, ...) run against the API.

Apart from `aiddclient.cli` (the parser and the entry point) so that `aidd --help`, a usage error and the
console's start import none of this: the client, its typed views and asyncio are imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from typing import Any

from aiddclient.client import CoordinatorClient
from aiddclient.resultsfile import write_results
from aiddclient.submitfile import chunked, read_batch_file, submit_in_chunks
from aiddclient.tables import render_table
from aiddclient.taskcommands import (
    EXIT_TIMED_OUT,
    Counts,
    batch_counter,
    describe,
    id_counter,
    print_logs,
    summary,
    wait_for,
)
from coordinator.errors import ConfigError


def _live(args: argparse.Namespace) -> bool:
    """Whether to show progress (a bar, a live count): on a terminal only, never in a pipe or a log, nor with --json."""
    return sys.stderr.isatty() and not args.json


async def _services(client: CoordinatorClient, args: argparse.Namespace) -> tuple[Any, str]:
    """`aidd services [NAME --pause/--resume/--limit/--description]`: the change made, or the list."""
    change: dict[str, Any] = {"description": args.description} if args.description is not None else {}
    if args.pause or args.resume:
        change["paused"] = args.pause
    if "limit" in vars(args):
        change["max_running"] = args.limit
    if args.name and change:
        result: Any = await client.change_service(args.name, **change)
        limit = "no limit" if result["limit"] is None else f"limit {result['limit']}"
        return result, f"{result['name']}: {'paused' if result['paused'] else 'active'}, {limit}"
    if change:
        raise ConfigError("services: name the service to change")
    result = await client.list_services()
    if args.name:
        result = [s for s in result if s["name"] == args.name]
    return result, render_table(result, ["name", "paused", "limit", "running", "pending", "description"])


def _print_progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    end = "\n" if done == total else ""
    print(f"\rsubmitting [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr,
          flush=True)


def _submit_body(args: argparse.Namespace) -> dict[str, Any]:
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params: not JSON: {exc}") from None
    resources = {k: v for k, v in {"cpu": args.cpu, "memory_gb": args.memory_gb, "gpu": args.gpu,
                                    "gpu_memory_gb": args.gpu_memory_gb}.items() if v is not None}
    body = {"service": args.service, "task_type": args.task_type, "name": args.name, "input_params": params,
            "priority": args.priority, "group": args.group, "labels": args.label or None,
            "resources": resources or None, "max_retries": args.max_retries, "timeout_s": args.timeout_s,
            "outputs": args.outputs or None}
    return {k: v for k, v in body.items() if v is not None}


async def run_client(args: argparse.Namespace) -> int:
    async with CoordinatorClient(args.url, args.api_key) as client:
        for option in ("batch_id", "worker_id"):
            if getattr(args, option, None):
                setattr(args, option, await _full_id(client, option, getattr(args, option)))
        if args.command == "submit":
            body = _submit_body(args)
            if args.chunk is not None and (args.file is None or args.chunk < 1):
                raise ConfigError("--chunk: give a number of inputs per task (1 or more) with --file")
            if args.file is None:
                result: Any = await client.submit(body)
                text = f"submitted {result['id']} ({result['status']})"
            else:
                inputs = read_batch_file(args.file, args.param_name)
                body.pop("name", None)  # --name names the batch; its tasks are named after their inputs
                if args.chunk is not None:
                    inputs = chunked(inputs, args.chunk, args.param_name)
                result = await submit_in_chunks(client, body, inputs, name=args.name or args.file.name,
                                                progress=_print_progress if _live(args) else None)
                text = f"submitted {result['count']} tasks as batch {result['batch_id']}"
        elif args.command == "tasks":
            result = await client.list_tasks(page=args.page, page_size=args.page_size, status=args.status,
                                             service=args.service, group=args.group, batch_id=args.batch_id,
                                             worker_id=args.worker_id, q=args.q, pending_reason=args.reason)
            rows = [{**t, "reason": (t.get("pending_reason") or {}).get("code", "")} for t in result["items"]]
            text = render_table(rows, ["id", "status", "reason", "service", "task_type", "name", "priority",
                                       "group", "attempts", "created_at"])
            text += f"\n{len(result['items'])} of {result['total']} tasks (page {result['page']})"
        elif args.command == "workers" and args.action == "rm":
            if not args.ids:
                raise ConfigError("workers rm: give the ids of offline workers to remove")
            result = [await client.remove_worker(worker_id) for worker_id in args.ids]
            text = "\n".join(f"removed worker {r['id']}" for r in result)
        elif args.command == "workers":
            result = await client.list_workers(group=args.group, status=args.status)
            text = render_table(result, ["id", "hostname", "status", "groups", "running", "slots", "heartbeat_age_s",
                                          "problem"])
        elif args.command == "files":
            from aiddclient.filedownload import files_command

            result, text = await files_command(client, args)
        elif args.command == "services":
            result, text = await _services(client, args)
        elif args.command == "show":
            result = await client.get_task(args.task_id)
            result["timeline"] = (await client.timeline(result["id"]))["events"]
            text = describe(result, result["timeline"])
        elif args.command == "logs":
            return await print_logs(client, args.task_id, args.follow, raw=args.raw)
        elif args.command == "wait":
            return await _wait(client, args)
        elif args.command == "results":
            return await _results(client, args)
        else:
            flt = {"status": args.status, "service": args.service, "group": args.group, "batch_id": args.batch_id,
                   "worker_id": args.worker_id, "search": args.q, "pending_reason": args.reason}
            flt = {k: v for k, v in flt.items() if v}
            if not args.ids and not flt and not args.all:
                raise ConfigError(f"{args.command}: give task ids, a filter (--status, --service, ...) or --all")
            ids = [await _full_id(client, "task_id", i) for i in args.ids]
            result = await client.act(args.command, ids=ids or None, filter=None if ids else flt, all=args.all)
            text = f"{args.command}: {result['changed']} changed, {result['skipped']} skipped"
    print(json.dumps(result, indent=2, default=str) if args.json else text)
    return 0


async def _results(client: CoordinatorClient, args: argparse.Namespace) -> int:
    if args.output is None and args.fmt == "parquet" and sys.stdout.isatty():
        raise ConfigError("--format parquet: give --output FILE or redirect stdout to a file")
    if args.output is None:
        await write_results(client, args.batch_id, args.fmt, sys.stdout.buffer)
        sys.stdout.flush()
        return 0
    try:
        with args.output.open("wb") as out:
            await write_results(client, args.batch_id, args.fmt, out)
    except OSError as exc:
        raise ConfigError(f"--output: cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


ID_ROUTES = {"task_id": "/api/v1/tasks/{}", "batch_id": "/api/v1/batches/{}", "worker_id": "/api/v1/workers/{}"}
"""Where the coordinator resolves an id prefix of each kind (404 for none, 409 naming candidates for several)."""


async def _full_id(client: CoordinatorClient, kind: str, given: str) -> str:
    """A task, batch or worker id as given, or the one id a prefix stands for (the coordinator resolves it)."""
    try:
        return str(uuid.UUID(given))
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-fA-F][0-9a-fA-F-]{0,35}", given):
        raise ConfigError(f"{kind.replace('_id', '')} {given!r}: not an id, nor the start of one")
    return str((await client.request("GET", ID_ROUTES[kind].format(given)))["id"])


async def _wait(client: CoordinatorClient, args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.batch_id):
        raise ConfigError("wait: give task ids or --batch ID (not both)")
    count = batch_counter(client, args.batch_id) if args.batch_id else id_counter(client, args.ids)
    live = _live(args)

    def show_progress(counts: Counts) -> None:
        print(f"\rwaiting: {summary(counts)}\033[K", end="", file=sys.stderr, flush=True)
    status, counts = await wait_for(count, args.timeout, show_progress if live else None)
    if live:
        print(file=sys.stderr)
    outcome = ("all succeeded" if status == 0 else f"gave up after {args.timeout:g}s" if status == EXIT_TIMED_OUT
               else "not all succeeded")
    print(json.dumps({"exit": status, "counts": counts}) if args.json else f"{summary(counts)} ({outcome})")
    return status
