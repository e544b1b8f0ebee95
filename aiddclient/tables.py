"""Plain-text tables for the command line (what tasks wrote shown printable: no terminal escapes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator.textcheck import printable


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return printable(",".join(map(str, value))) or "-"
    text = printable(str(value))
    return text[:19].replace("T", " ") if len(text) >= 19 and text[4:5] == "-" and text[10:11] == "T" else text


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], max_width: int = 40) -> str:
    """Rows as aligned columns under an upper-case header; long cells are cut with an ellipsis."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in line] for line in cells]
    header = [c.upper() for c in columns]
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=False)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in [header, *cells])
