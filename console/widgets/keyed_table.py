"""A DataTable that is updated by keyed diffs, fits its columns to the terminal and filters its rows by text.

Diffs: changed cells updated, new rows added, vanished rows dropped, never a clear-and-rebuild on refresh.
Width: each column says when it may be dropped (`drop`: the highest goes first) and which ones `grow` into
the width left over, so the same table reads at 80 columns and uses 200. The table is rebuilt only when the
set of columns or their widths change (a resize, a new sort arrow), never on a refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from console import keys

Row = tuple[str, Sequence[Text]]
"""A row key and its cells, in column order (every column, shown or not)."""


class Column(NamedTuple):
    """A column: its key, header and width in cells (fixed: a table that measures its cells on every update
    is slow), when it may be dropped on a narrow terminal and whether it takes the width left over."""

    key: str
    label: str
    width: int
    drop: int = 0
    """0: always shown; otherwise dropped when the table is too narrow, the highest first."""
    grow: int = 0
    """This column's share of the width the shown columns leave (0: none)."""


PADDING = 2
"""Cells a column takes beyond its width (DataTable's cell padding, one each side)."""
SCROLLBAR = 2
"""Room kept for the vertical scrollbar."""


def fit(columns: Sequence[Column], width: int) -> list[tuple[int, int]]:
    """(column index, width) of the columns shown in `width` cells: drop the highest `drop` first until the
    rest fits, then share out what is left among the growing columns, by their `grow`."""
    shown = list(range(len(columns)))
    for index in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop):
        if sum(columns[i].width + PADDING for i in shown) <= width:
            break
        shown.remove(index)
    spare = max(0, width - sum(columns[i].width + PADDING for i in shown))
    shares = sum(columns[i].grow for i in shown)
    widths = {i: columns[i].width + (spare * columns[i].grow // shares if shares else 0) for i in shown}
    growing = [i for i in shown if columns[i].grow]
    if growing:  # what the division left goes to the last growing column
        widths[growing[-1]] += spare - sum(widths[i] - columns[i].width for i in growing)
    return [(i, widths[i]) for i in shown]


class KeyedTable(DataTable[Text]):
    """A row-cursor table kept in step with a list of keyed rows without ever clearing it on a refresh.

    `sync(rows)` updates only the cells that changed, adds new keys, removes vanished ones and then puts
    the rows in the given order; the cursor stays on the same key when that row is still there.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(b.key, b.action, b.description, show=False) for b in keys.TABLE
    ]

    def __init__(self, columns: Sequence[Column | tuple[str, str, int]], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._column_spec = [Column(*c) for c in columns]
        self._labels: dict[str, str] = {}
        self._layout: list[tuple[int, int]] = []
        self._cells: dict[str, tuple[Text, ...]] = {}
        self._order: list[str] = []
        self._rows: list[Row] = []
        self.filter_text = ""
        """Only rows (or groups of rows, see `row_group`) whose text holds this are shown (`/`)."""

    def on_mount(self) -> None:
        self._layout = fit(self._column_spec, 10_000 if not self.size.width else self.size.width - SCROLLBAR)
        self._add_columns()

    def on_resize(self, event: events.Resize) -> None:
        layout = fit(self._column_spec, event.size.width - SCROLLBAR)
        if layout != self._layout:
            self._layout = layout
            self._rebuild()

    def _add_columns(self) -> None:
        for index, width in self._layout:
            column = self._column_spec[index]
            self.add_column(self._labels.get(column.key, column.label), key=column.key, width=width)

    def _rebuild(self) -> None:
        """Show the current rows again under new columns (a resize or a new header), cursor kept."""
        keep = self.cursor_key
        with self.app.batch_update():
            self.clear(columns=True)
            self._add_columns()
            shown = [index for index, _ in self._layout]
            for key in self._order:
                cells = self._cells[key]
                self.add_row(*(cells[i] for i in shown), key=key)
            if keep is not None and keep in self._cells:
                self.move_cursor(row=self.get_row_index(keep), animate=False)

    def set_labels(self, labels: dict[str, str]) -> None:
        """Change column headers (e.g. to show the sort arrow; a column left out keeps its own header).
        Rebuilds the table only when a header changed."""
        wanted = {c.key: labels[c.key] for c in self._column_spec if c.key in labels and labels[c.key] != c.label}
        if wanted == self._labels:
            return
        self._labels = wanted
        if self.is_mounted:
            self._rebuild()

    @property
    def column_keys(self) -> list[str]:
        """The keys of the columns shown, in order."""
        return [self._column_spec[index].key for index, _ in self._layout]

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self._order or not self.is_valid_row_index(self.cursor_row):
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except RowDoesNotExist:
            return None

    def row_group(self, key: str) -> str:
        """Rows of one group are shown or hidden together by the text filter (a host and its GPUs)."""
        return key

    def set_filter(self, text: str) -> None:
        """Show only the rows whose cells hold `text` (case-insensitive; empty shows all)."""
        self.filter_text = text.strip()
        self.sync(self._rows)

    def _filtered(self, rows: Sequence[Row]) -> list[Row]:
        needle = self.filter_text.lower()
        if not needle:
            return list(rows)
        matching = {self.row_group(key) for key, cells in rows
                    if needle in " ".join(c.plain for c in cells).lower()}
        return [row for row in rows if self.row_group(row[0]) in matching]

    def sync(self, rows: Sequence[Row]) -> None:
        """Make the table show exactly `rows` (those the filter keeps), in order, touching only what changed."""
        self._rows = list(rows)
        rows = self._filtered(rows)
        keep = self.cursor_key
        wanted = {key for key, _ in rows}
        shown = [index for index, _ in self._layout]
        with self.app.batch_update():
            for key in [k for k in self._cells if k not in wanted]:
                del self._cells[key]
                self.remove_row(key)
            columns = self.column_keys
            for key, cells in rows:
                cells = tuple(cells)
                old = self._cells.get(key)
                if old is None:
                    self.add_row(*(cells[i] for i in shown), key=key)
                elif old != cells:
                    kept = []
                    for index, (before, after) in enumerate(zip(old, cells, strict=True)):
                        if before is not after and before != after:
                            if index in shown:
                                self.update_cell(key, columns[shown.index(index)], after)
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
                self.sort(columns[0], key=lambda value: position.get(id(value), len(position)))
            self._order = order
            if keep is not None and keep in self._cells:
                index = self.get_row_index(keep)
                if index != self.cursor_row:
                    self.move_cursor(row=index, animate=False)

    def _order_on_screen(self, order: list[str]) -> list[str]:
        """The keys as the table currently orders them (cheap when nothing was added or removed)."""
        if len(order) == len(self._order) and order == self._order:
            return order
        return [str(row.key.value) for row in self.ordered_rows]
