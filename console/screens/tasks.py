"""The Tasks pane: one page at a time from the server, filtered and sorted there; selection and bulk actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from aiddclient.views import TaskPage
from console import keys
from console.actions import Target, TaskActionKeys, plural, run_task_action, task_label
from console.query import SORTS, TaskQuery
from console.screens.detail import TaskDetailScreen
from console.screens.filter import FilterModal
from console.screens.live import PaneScreen
from console.widgets.task_table import TaskTable, sort_labels

PAGE_SIZE = 100
"""Rows fetched per page: the store may hold 100 000 tasks; the console never loads more than this."""


@dataclass(frozen=True)
class View:
    """What the table shows: filter, sort and page (a poll answers for one view)."""

    query: TaskQuery = field(default_factory=TaskQuery)
    sort: str = "created_at"
    descending: bool = True
    page: int = 1

    @property
    def sort_param(self) -> str:
        """The API's sort parameter, e.g. `-created_at`."""
        return ("-" if self.descending else "") + self.sort

    def describe_sort(self) -> str:
        """The order in words."""
        if self.sort == "created_at":
            return "newest first" if self.descending else "oldest first"
        return f"by {self.sort.replace('_at', '').replace('_', ' ')} {'↓' if self.descending else '↑'}"


class TasksScreen(TaskActionKeys, PaneScreen):
    """Filterable, sortable, paged task list; c / r / R act on the selection, the filter or the cursor task."""

    MODE = "tasks"
    BINDINGS: ClassVar[list[BindingType]] = [*keys.TASKS]

    def __init__(self) -> None:
        super().__init__()
        self.view = View()
        self.selected: dict[str, tuple[str, str]] = {}
        """Selected task ids with their status and a short label, as when selected (kept across pages)."""
        self.all_matching = False
        """`a`: the selection is every task matching the filter."""
        self.total = 0

    def compose_pane(self) -> ComposeResult:
        yield Static(id="summary", classes="summary")
        yield TaskTable()

    def on_screen_resume(self) -> None:
        query = self.console.take_task_query()
        if query is not None:
            self.set_query(query, refresh=False)
        super().on_screen_resume()

    # -- polling ------------------------------------------------------------------------------------

    async def fetch(self) -> tuple[View, TaskPage]:
        view = self.view
        page = await self.console.client.tasks(page=view.page, page_size=PAGE_SIZE, sort=view.sort_param,
                                               **view.query.list_params())
        return view, page

    def apply(self, data: tuple[View, TaskPage]) -> None:
        view, page = data
        if view != self.view:
            return  # the operator changed the view meanwhile; its own poll is on its way
        self.total = page.total
        last_page = max(1, -(-self.total // PAGE_SIZE))
        if view.page > last_page:
            self.view = View(view.query, view.sort, view.descending, last_page)
            self.refresh_now()
            return
        table = self.query_one(TaskTable)
        table.set_labels(sort_labels(view.sort, view.descending))
        table.show(page.items, set(self.selected), self.all_matching, self.console.palette,
                   self.console.options.now())
        self._show_summary(len(page.items), last_page)

    def _show_summary(self, shown: int, last_page: int) -> None:
        view = self.view
        first = (view.page - 1) * PAGE_SIZE + 1 if shown else 0
        text = Text()
        text.append(f"{first:,}\u2013{first + shown - 1 if shown else 0:,} of {self.total:,}".replace(",", " "),
                    "bold")
        text.append(f" · page {view.page}/{last_page} ([ ]) · {view.describe_sort()} (s, S)")
        text.append("\nFilter (/): ")
        text.append(view.query.describe(), self.console.palette.style("selected") if not view.query.empty else "")
        if self.all_matching:
            text.append(f" · all {plural(self.total)} matching selected", self.console.palette.style("selected"))
        elif self.selected:
            text.append(f" · {len(self.selected)} selected (esc clears)", self.console.palette.style("selected"))
        if not self.total and view.query.empty:
            text.append("\nNo tasks yet: press n to submit one.", self.console.palette.style("muted"))
        self.query_one("#summary", Static).update(text)

    def _redraw(self) -> None:
        """Re-show the current page at once (selection changes) and poll again."""
        if self.last_data is not None:
            self._apply_safely(self.last_data)
        self.refresh_now()

    # -- view changes -------------------------------------------------------------------------------

    def set_query(self, query: TaskQuery, refresh: bool = True) -> None:
        """Show the tasks matching `query`, from page 1, with the selection cleared."""
        self.view = View(query, self.view.sort, self.view.descending, 1)
        self.selected.clear()
        self.all_matching = False
        if refresh:
            self.refresh_now()

    def action_filter(self) -> None:
        def chosen(query: TaskQuery | None) -> None:
            if query is not None:
                self.set_query(query)
        self.app.push_screen(FilterModal(self.view.query), chosen)

    def action_sort(self) -> None:
        position = SORTS.index(self.view.sort) if self.view.sort in SORTS else -1
        self._set_sort(SORTS[(position + 1) % len(SORTS)])

    def action_reverse(self) -> None:
        v = self.view
        self.view = View(v.query, v.sort, not v.descending, 1)
        self.refresh_now()

    def _set_sort(self, sort: str) -> None:
        v = self.view
        descending = not v.descending if sort == v.sort else sort in ("created_at", "priority", "started_at",
                                                                       "finished_at")
        self.view = View(v.query, sort, descending, 1)
        self.refresh_now()

    def on_task_table_sort_chosen(self, message: TaskTable.SortChosen) -> None:
        self._set_sort(message.sort)

    def action_page(self, delta: int) -> None:
        v = self.view
        last_page = max(1, -(-self.total // PAGE_SIZE))
        page = min(last_page, max(1, v.page + delta))
        if page != v.page:
            self.view = View(v.query, v.sort, v.descending, page)
            self.refresh_now()

    # -- selection ----------------------------------------------------------------------------------

    def action_toggle_select(self) -> None:
        table = self.query_one(TaskTable)
        task = table.task_at_cursor()
        if task is None:
            return
        if self.all_matching:
            self.all_matching = False
        if task.id in self.selected:
            del self.selected[task.id]
        else:
            self.selected[task.id] = (task.status, task_label(task))
        table.action_cursor_down()
        self._redraw()

    def action_select_matching(self) -> None:
        self.all_matching = not self.all_matching
        self.selected.clear()
        self._redraw()

    def action_clear_selection(self) -> None:
        if self.selected or self.all_matching:
            self.selected.clear()
            self.all_matching = False
            self._redraw()

    # -- detail and actions -------------------------------------------------------------------------

    def on_task_table_task_chosen(self, message: TaskTable.TaskChosen) -> None:
        self.app.push_screen(TaskDetailScreen(message.task_id))

    def action_detail(self) -> None:
        task = self.query_one(TaskTable).task_at_cursor()
        if task:
            self.app.push_screen(TaskDetailScreen(task.id))

    def action_logs(self) -> None:
        task = self.query_one(TaskTable).task_at_cursor()
        if task:
            self.app.push_screen(TaskDetailScreen(task.id, log_maximised=True))

    def target(self) -> Target | None:
        """What an action applies to now: every match (`a`), the selection, or the task under the cursor."""
        if self.all_matching:
            return Target(f"all tasks matching {self.view.query.describe()}", query=self.view.query)
        if self.selected:
            return Target(f"the {plural(len(self.selected))} selected", ids=tuple(self.selected),
                          statuses=tuple(s for s, _ in self.selected.values()),
                          names=tuple(f"{label} ({s})" for s, label in self.selected.values()))
        task = self.query_one(TaskTable).task_at_cursor()
        if task is None:
            return None
        return Target(f"task {task_label(task)}", ids=(task.id,), statuses=(task.status,), attempt_id=task.attempt_id)

    @work(group="action", exit_on_error=False)
    async def act(self, action: str) -> None:
        target = self.target()
        if target is None:
            self.notify("No task under the cursor.", severity="warning")
            return
        if await run_task_action(self.console, action, target):
            self.selected.clear()
            self.all_matching = False
        self.refresh_now()
