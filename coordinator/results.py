"""A campaign's results as one table: the per-molecule rows of every task of a batch, streamed.

A task of the chem pack returns {"rows": [...], "columns": [...]} (see `toolkit.inputs`): one row per input
molecule. The table has a row per molecule of every task, in submission order, with the task, its attempt and
status; a task that did not succeed gives a row per molecule of its input with its error (so a failed chunk
is visible, molecule by molecule), and a task whose result has no rows gives one row with its result as JSON.
Rows are read from PostgreSQL in pages and written as they come, so a 100 000-molecule campaign never sits
in memory; the columns are found first, by PostgreSQL, from the stored results.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.errors import BatchNotFound
from coordinator.models import Batch, Task
from coordinator.states import TaskStatus
from toolkit.inputs import ROWS, molecules

FIXED = ("name", "smiles", "task_id", "attempt", "status", "error")
"""The first columns of every results table."""
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
PAGE_ROWS = 200
"""Tasks read from PostgreSQL at a time."""

DECLARED = text("""
SELECT result->'columns' FROM tasks
WHERE batch_id = :batch AND jsonb_typeof(result->'columns') = 'array'
GROUP BY 1 ORDER BY min(seq)""")
"""The column lists the tasks declared, in the order of the first task declaring each."""
ROW_KEYS = text("""
SELECT DISTINCT key FROM tasks t,
  jsonb_array_elements(CASE WHEN jsonb_typeof(t.result->'rows') = 'array' THEN t.result->'rows' ELSE '[]' END) r,
  jsonb_object_keys(CASE WHEN jsonb_typeof(r) = 'object' THEN r ELSE '{}' END) key
WHERE t.batch_id = :batch AND jsonb_typeof(t.result->'columns') IS DISTINCT FROM 'array'""")
"""Every key of the rows of tasks that declared no columns (the pack's tasks declare theirs: nothing to scan)."""
PLAIN_RESULTS = text("""
SELECT EXISTS (SELECT 1 FROM tasks WHERE batch_id = :batch AND result IS NOT NULL
               AND jsonb_typeof(result->'rows') IS DISTINCT FROM 'array')""")
"""Whether some task's result is not a table of rows (it gets a `result` column)."""


async def columns(engine: AsyncEngine, batch_id: uuid.UUID) -> list[str]:
    """The table's columns: the fixed ones, those the tasks declared (in their order), any other row keys
    (sorted), and `result` when some result has no rows.

    Raises:
        BatchNotFound: no such batch.
    """
    async with engine.connect() as conn:
        if (await conn.execute(select(Batch.id).where(Batch.id == batch_id))).first() is None:
            raise BatchNotFound(str(batch_id))
        declared = [c for (listed,) in await conn.execute(DECLARED, {"batch": batch_id}) for c in listed]
        keys = sorted((await conn.execute(ROW_KEYS, {"batch": batch_id})).scalars())
        plain = (await conn.execute(PLAIN_RESULTS, {"batch": batch_id})).scalar_one()
    found = list(dict.fromkeys([*FIXED, *declared, *keys]))
    return [*found, "result"] if plain and "result" not in found else found


def task_rows(task: Any) -> Iterator[dict[str, Any]]:
    """The table rows of one task (a row of `tasks`: id, status, attempts, input_params, result, error)."""
    base = {"task_id": str(task.id), "attempt": task.attempts, "status": task.status}
    result = task.result
    if task.status == TaskStatus.SUCCEEDED and isinstance(result, dict) and isinstance(result.get(ROWS), list):
        for row in result[ROWS]:
            yield {**base, **row} if isinstance(row, dict) else {**base, "result": row}
        return
    if task.status == TaskStatus.SUCCEEDED:
        yield {**base, "result": result}
        return
    try:
        inputs = molecules(task.input_params or {})
    except ValueError:
        yield {**base, "error": task.error}
        return
    for molecule in inputs:
        yield {**base, "name": molecule.name, "smiles": molecule.smiles, "error": task.error}


async def rows(engine: AsyncEngine, batch_id: uuid.UUID) -> AsyncIterator[dict[str, Any]]:
    """Every row of the batch's table, task by task in submission order, read a page of tasks at a time."""
    query = (select(Task.id, Task.status, Task.attempts, Task.input_params, Task.result, Task.error)
             .where(Task.batch_id == batch_id).order_by(Task.seq).execution_options(yield_per=PAGE_ROWS))
    async with engine.connect() as conn:
        async for task in await conn.stream(query):
            for row in task_rows(task):
                yield row


def _cell(value: Any) -> Any:
    """A CSV cell: text and numbers as they are, nothing for null, JSON for lists, objects and booleans."""
    if value is None:
        return ""
    if isinstance(value, bool | list | dict):
        return orjson.dumps(value).decode()
    return value


async def encoded(engine: AsyncEngine, batch_id: uuid.UUID, names: list[str], fmt: str) -> AsyncIterator[bytes]:
    """The table as JSON lines (every row with every column, null where it has none) or CSV with a header."""
    if fmt == "jsonl":
        async for row in rows(engine, batch_id):
            yield orjson.dumps({name: row.get(name) for name in names}) + b"\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    async for row in rows(engine, batch_id):
        writer.writerow([_cell(row.get(name)) for name in names])
        if buffer.tell() > 65536:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
