"""`aidd results`: a batch's results table written to a file or stdout as CSV, JSON lines or Parquet.

CSV and JSON lines are the coordinator's stream, passed through. Parquet (needs `pyarrow`, which the `chem`
extra installs) is built here from the JSON lines: spooled to a temporary file, a first pass finds each
column's type, a second writes row groups, so memory stays bounded whatever the campaign's size.
"""

from __future__ import annotations

import tempfile
from typing import IO, TYPE_CHECKING, Any

import orjson

from coordinator.errors import ConfigError

if TYPE_CHECKING:
    from aiddclient.client import CoordinatorClient

FORMATS = ("csv", "jsonl", "parquet")
ROW_GROUP = 10_000
"""Rows per Parquet row group."""


async def write_results(client: CoordinatorClient, batch_id: str, fmt: str, out: IO[bytes]) -> None:
    """Write the batch's table to `out` in `fmt`.

    Raises:
        ApiError: the coordinator refused or cannot be reached.
        ConfigError: Parquet without pyarrow installed.
    """
    if fmt != "parquet":
        async for chunk in client.results(batch_id, fmt):
            out.write(chunk)
        return
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ConfigError("--format parquet needs pyarrow: pip install pyarrow (the chem extra has it)") from None
    with tempfile.TemporaryFile() as spool:
        async for chunk in client.results(batch_id, "jsonl"):
            spool.write(chunk)
        spool.seek(0)
        types = column_types(spool)
        spool.seek(0)
        write_parquet(spool, types, out)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str" if isinstance(value, str) else "json"


def column_types(lines: IO[bytes]) -> dict[str, str]:
    """Each column's type over all rows: bool, int, float (ints and floats), str, or json (anything else, kept as
    JSON text); a column with no value at all is str."""
    kinds: dict[str, set[str]] = {}
    for line in lines:
        for name, value in orjson.loads(line).items():
            seen = kinds.setdefault(name, set())
            if value is not None:
                seen.add(_kind(value))
    types = {}
    for name, seen in kinds.items():
        if seen == {"int", "float"}:
            seen = {"float"}
        types[name] = seen.pop() if len(seen) == 1 else "str" if not seen else "json"
    return types


def write_parquet(lines: IO[bytes], types: dict[str, str], out: IO[bytes]) -> None:
    """JSON lines to Parquet, ROW_GROUP rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string(), "json": pa.string()}
    schema = pa.schema([(name, arrow[kind]) for name, kind in types.items()])
    as_json = [name for name, kind in types.items() if kind == "json"]

    def flush(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            for name in as_json:
                if row.get(name) is not None and not isinstance(row[name], str):
                    row[name] = orjson.dumps(row[name]).decode()
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))

    with pq.ParquetWriter(out, schema) as writer:
        rows: list[dict[str, Any]] = []
        for line in lines:
            rows.append(orjson.loads(line))
            if len(rows) == ROW_GROUP:
                flush(rows)
                rows = []
        if rows or not types:
            flush(rows)
