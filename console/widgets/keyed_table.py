"""A DataTable that is updated by keyed diffs: changed cells updated, new rows added, vanished rows dropped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

Row = tuple[str, Sequence[Text]]
"""A row key and its cells, in column order."""
Column = tuple[str, str, int]
"""A column's key, header and width in cells (fixed: a table that measures its cells on every update is slow)."""


class KeyedTable(DataTable[Text]):
    """A row-cursor table kept in step with a list of keyed rows without ever clearing it.

    `sync(rows)` updates only the cells that changed, adds new keys, removes vanished ones and then puts
    the rows in the given order; the cursor stays on the same key when that row is still there.
    """

    def __init__(self, columns: Sequence[Column], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._column_spec = list(columns)
        self._cells: dict[str, tuple[Text, ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label, width in self._column_spec:
            self.add_column(label, key=key, width=width)

    @property
    def column_keys(self) -> list[str]:
        """The keys of the columns, in order."""
        return [key for key, _, _ in self._column_spec]

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self._order or not self.is_valid_row_index(self.cursor_row):
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except RowDoesNotExist:
            return None

    def sync(self, rows: Sequence[Row]) -> None:
        """Make the table show exactly `rows`, in this order, touching only what changed."""
        keep = self.cursor_key
        wanted = {key for key, _ in rows}
        with self.app.batch_update():
            for key in [k for k in self._cells if k not in wanted]:
                del self._cells[key]
                self.remove_row(key)
            columns = self.column_keys
            for key, cells in rows:
                cells = tuple(cells)
                old = self._cells.get(key)
                if old is None:
                    self.add_row(*cells, key=key)
                elif old != cells:
                    kept = []
                    for column, before, after in zip(columns, old, cells, strict=True):
                        if before is not after and before != after:
                            self.update_cell(key, column, after)
                            kept.append(after)
                        else:
                            kept.append(before)
                    cells = tuple(kept)
                else:
                    cells = old  # the objects the table holds (the sort below finds rows by identity)
                self._cells[key] = cells
            order = [key for key, _ in rows]
            if order != self._order_on_screen(order):
                position = {id(self._cells[key][0]): i for i, key in enumerate(order)}
                first = self.column_keys[0]
                self.sort(first, key=lambda value: position.get(id(value), len(position)))
            self._order = order
            if keep is not None and keep in self._cells:
                index = self.get_row_index(keep)
                if index != self.cursor_row:
                    self.move_cursor(row=index, animate=False, scroll=False)

    def _order_on_screen(self, order: list[str]) -> list[str]:
        """The keys as the table currently orders them (cheap when nothing was added or removed)."""
        if len(order) == len(self._order) and order == self._order:
            return order
        return [str(row.key.value) for row in self.ordered_rows]
