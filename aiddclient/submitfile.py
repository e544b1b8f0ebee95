"""Batches from files (one input per line, or a JSON / CSV list), sent in chunks with progress."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiddclient.client import CoordinatorClient
from coordinator.errors import ConfigError

CHUNK = 1000
"""Tasks per request (the coordinator's default max_batch_tasks)."""

SMILES_SUFFIXES = (".smi", ".smiles")
"""Files read as SMILES files: a SMILES and an optional name (after a space or tab) per line."""

Progress = Callable[[int, int], None]
NAME_KEYS = ("name", "title", "id", "compound", "ligand", "smiles")
"""Columns of a CSV or keys of a JSON input that name it, in order of preference."""
NAME_LIMIT = 200


def input_name(params: dict[str, Any]) -> str:
    """What a batch task is called: its input (`CCO`), so that a failed one can be found by its compound.

    One value: that value; several: the first of NAME_KEYS present, else the first value.
    """
    if not params:
        return ""
    key = next((k for k in NAME_KEYS if k in params), next(iter(params)))
    value = params[key]
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= NAME_LIMIT else text[: NAME_LIMIT - 1] + "…"


def parse_batch(text: str, param_name: str, suffix: str = "") -> list[dict[str, Any]]:
    """Inputs of a batch: a JSON list (of input_params objects, or of values), a CSV with a header row, a SMILES
    file (`.smi`: a SMILES and an optional name per line), or one value per line (blank lines and lines starting
    with # skipped)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"batch file: not a JSON list: {exc}") from None
        return [i if isinstance(i, dict) else {param_name: i} for i in items]
    if suffix.lower() == ".csv":
        return [dict(row) for row in csv.DictReader(io.StringIO(text))]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if suffix.lower() in SMILES_SUFFIXES:  # "SMILES name": the name is the rest of the line, if any
        fields = [line.split(None, 1) for line in lines]
        return [{param_name: f[0], **({"name": f[1].strip()} if len(f) > 1 else {})} for f in fields]
    return [{param_name: line} for line in lines]


def chunked(inputs: list[dict[str, Any]], size: int, param_name: str) -> list[dict[str, Any]]:
    """Inputs grouped `size` to a task: {param_name: [values], "names": [names]}, a name being the input's
    `name` (or `id`) from the file, else its place in the file (1, 2, ...), so every row of the results table
    says which compound it is.

    Raises:
        ConfigError: an input without `param_name`.
    """
    for place, params in enumerate(inputs, 1):
        if param_name not in params:
            raise ConfigError(f"--chunk: input {place} has no {param_name!r} (see --param-name)")
    names = [str(p.get("name") or p.get("id") or place) for place, p in enumerate(inputs, 1)]
    return [{param_name: [p[param_name] for p in inputs[start:start + size]], "names": names[start:start + size]}
            for start in range(0, len(inputs), size)]


def read_batch_file(path: Path, param_name: str) -> list[dict[str, Any]]:
    """The inputs in `path` (see parse_batch), or a ConfigError naming the file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--file: cannot read {path}: {exc}") from None
    inputs = parse_batch(text, param_name, path.suffix)
    if not inputs:
        raise ConfigError(f"--file: {path} holds no inputs")
    return inputs


async def submit_in_chunks(client: CoordinatorClient, template: dict[str, Any], inputs: list[dict[str, Any]],
                           name: str = "", progress: Progress | None = None) -> dict[str, Any]:
    """Submit one task per input (its input_params merged over the template's) as one batch called `name`.

    Each task is named after its input (see input_name), after the template's name if it has one
    (`Vina EGFR · imatinib`). Each chunk is all-or-nothing; if a later chunk is refused, the error says how
    many went in.
    """
    base_params = template.get("input_params", {})
    defaults = {k: v for k, v in template.items() if k not in ("input_params", "name")}
    prefix = f"{template['name']} · " if template.get("name") else ""
    batch_id: str | None = None
    done = 0
    for start in range(0, len(inputs), CHUNK):
        tasks = [{"name": (prefix + input_name(params))[:500], "input_params": {**base_params, **params}}
                 for params in inputs[start:start + CHUNK]]
        try:
            answer = await client.submit_batch(tasks, name=name, batch_id=batch_id, defaults=defaults)
        except Exception as exc:
            if done:
                raise type(exc)(f"{exc} (after {done} of {len(inputs)} tasks went in as batch {batch_id})") from None
            raise
        batch_id = answer["batch_id"]
        done += answer["count"]
        if progress is not None:
            progress(done, len(inputs))
    return {"batch_id": batch_id, "count": done}
