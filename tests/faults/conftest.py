"""Fixtures of the fault suite: dedicated stores per module, a cluster per scenario, and the figures table."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.cluster import Cluster
from tests.faults.processes import Stores
from tests.faults.truth import Figures, table

FIGURES = pytest.StashKey[list[Figures]]()
FIGURES_FILE = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The per-scenario table at the end of the run (and where its JSON is)."""
    figures = config.stash.get(FIGURES, [])
    if figures:
        terminalreporter.section("fault scenarios")
        terminalreporter.write_line(table(figures))
        if FIGURES_FILE in config.stash:
            terminalreporter.write_line(f"figures as JSON: {config.stash[FIGURES_FILE]}")


@pytest.fixture(scope="module")
def stores() -> Iterator[Stores]:
    """An embedded Redis and PostgreSQL of this module's own: its scenarios flush, stop and restart them.

    The state dir is outside pytest's temp root (as root, PostgreSQL runs as another user that must reach it).
    """
    state = Path(tempfile.mkdtemp(prefix="aidd-faults-"))
    servers = Stores(state)
    yield servers
    servers.close()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def cluster(stores: Stores, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Build the scenario's cluster (`cluster(**AIDD_settings)`); all its processes are stopped afterwards."""
    built: list[Cluster] = []

    def make(**settings: str) -> Cluster:
        made = Cluster(stores, tmp_path / f"cluster{len(built)}", **settings)
        built.append(made)
        return made
    yield make
    for made in built:
        made.close()
        print(made.logs())


@pytest.fixture
def record(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[[Figures], None]:
    """Keep a scenario's figures for the table; the JSON file is rewritten each time (complete after any test).

    Lost tasks and duplicate accepted outcomes fail the scenario here, whatever else it checks.
    """
    config = request.config
    path = config.stash.setdefault(FIGURES_FILE, tmp_path_factory.getbasetemp() / "fault-figures.json")

    def keep(figures: Figures) -> None:
        config.stash[FIGURES].append(figures)
        path.write_text(json.dumps([f.row() for f in config.stash[FIGURES]], indent=2))
        print(table([figures]))
        assert figures.lost == 0, f"{figures.lost} acknowledged task(s) lost: {figures}"
        assert figures.duplicate_outcomes == 0, f"duplicate accepted outcomes: {figures}"
        assert figures.phantom_successes == 0, f"successes without a finished execution: {figures}"
    return keep
