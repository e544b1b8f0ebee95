"""Task, batch and worker ids given as unique prefixes (`6a87c9be`), as git and docker take them, and workers by
the name their client chose (`computer_001`, the Workers API's nodes): resolved in one place.

A route's `{task_id}`, `{batch_id}` or `{worker_id}` may be a full UUID or the start of one; a prefix is looked
up as a range of the primary key (so it costs an index probe, whatever the table's size): one match is that id,
none is a 404, several a 409 that lists them. Agents' own routes take full ids only.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.errors import AmbiguousId, BatchNotFound, TaskNotFound, WorkerNotFound
from coordinator.models import Batch, Task, Worker

PREFIX = re.compile(r"^[0-9a-fA-F]{1,32}$")
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NODES = uuid.UUID("3b0c8a52-6a0e-4f7b-9a39-1d2c5e7f9a10")
"""Namespace of the ids of named nodes (the Workers API's `computer_001`)."""
SHOWN = 5
"""Candidates an ambiguous prefix names."""
TABLES = {"task_id": (Task.id, TaskNotFound), "worker_id": (Worker.id, WorkerNotFound),
          "batch_id": (Batch.id, BatchNotFound)}


def is_prefix(name: str, value: str) -> bool:
    """Whether `value` can be a prefix of the id a path parameter `name` names."""
    return name in TABLES and PREFIX.match(value.replace("-", "")) is not None


def node_id(name: str) -> uuid.UUID:
    """The worker id of a node named by its client (`computer_001`): the same name is always the same worker."""
    return uuid.uuid5(NODES, name)


def is_node_name(name: str, value: str) -> bool:
    """Whether `value` names a node in a `{worker_id}` path parameter: a name, not a UUID or an id prefix (a name
    of hex digits only is taken as a prefix)."""
    return name == "worker_id" and NODE_NAME.match(value) is not None and not is_prefix(name, value)


async def resolve(engine: AsyncEngine, name: str, value: str) -> uuid.UUID:
    """The one id that starts with `value` (dashes ignored).

    Raises:
        TaskNotFound / WorkerNotFound / BatchNotFound: no id starts so.
        AmbiguousId: several do (some of them are named).
    """
    column, missing = TABLES[name]
    digits = value.replace("-", "").lower()
    low, high = uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))
    async with engine.connect() as conn:
        found = list((await conn.execute(select(column).where(column >= low, column <= high).order_by(column)
                                         .limit(SHOWN + 1))).scalars())
    if not found:
        raise missing(value)
    if len(found) > 1:
        raise AmbiguousId(name, value, [str(i) for i in found[:SHOWN]], len(found) > SHOWN)
    return uuid.UUID(str(found[0]))
