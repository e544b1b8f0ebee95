"""`aidd files`: list a task's files, and download its outputs (or inputs) through their presigned URLs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx

from aiddclient.client import ApiError, CoordinatorClient
from aiddclient.tables import render_table
from coordinator.storage.names import name_problem


def file_rows(files: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per file: kind (input / output), attempt, name, size."""
    rows = [{"kind": "input", "attempt": "", "name": f["name"], "size": f["size"]} for f in files["inputs"]]
    rows += [{"kind": "output", "attempt": a["number"], "name": f["name"], "size": f["size"]}
             for a in files["attempts"] for f in a["outputs"]]
    return rows


def chosen_files(files: dict[str, Any], attempt: int | None, inputs: bool) -> list[dict[str, Any]]:
    """The inputs, or the outputs of `attempt` (default: the latest attempt that has outputs)."""
    if inputs:
        return list(files["inputs"])
    with_outputs = [a for a in files["attempts"] if a["outputs"]]
    if attempt is not None:
        with_outputs = [a for a in with_outputs if a["number"] == attempt]
    return list(with_outputs[-1]["outputs"]) if with_outputs else []


async def download(entries: list[dict[str, Any]], dest: Path, timeout: float = 300.0) -> int:
    """Fetch each file to `dest/NAME` (written as NAME.part, then renamed); returns the bytes written.

    The presigned URLs carry their own credentials, so no API key is sent (S3 refuses a second one).
    """
    total = 0
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http:
        for entry in entries:
            name, url = entry["name"], entry.get("url")
            problem = name_problem(name)
            if problem is not None:
                raise ApiError(f"refusing to write file {name!r}: it {problem}")
            if not url:
                raise ApiError(f"file {name!r} is no longer stored (expired or deleted)")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            try:
                async with http.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise ApiError(f"download of {name!r} failed: HTTP {response.status_code}",
                                       response.status_code)
                    with partial.open("wb") as out:
                        async for chunk in response.aiter_bytes():
                            out.write(chunk)
                            total += len(chunk)
            except httpx.HTTPError as exc:
                raise ApiError(f"download of {name!r} failed: {type(exc).__name__}: {exc}") from None
            partial.replace(target)
    return total


async def files_command(client: CoordinatorClient, args: argparse.Namespace) -> tuple[Any, str]:
    """List the task's files, or download the chosen ones into `--download DIR`; returns (result, text)."""
    files = await client.task_files(args.task_id)
    if args.download is None:
        return files, render_table(file_rows(files), ["kind", "attempt", "name", "size"])
    chosen = chosen_files(files, args.attempt, args.inputs)
    if not chosen:
        return files, f"task {args.task_id} has no {'inputs' if args.inputs else 'outputs'} to download"
    size = await download(chosen, args.download)
    return files, f"downloaded {len(chosen)} file(s), {size} bytes, to {args.download}"
