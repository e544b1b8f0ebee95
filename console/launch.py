"""`aidd` (the console): on the embedded coordinator, on the state directory's background coordinator, or
attached to a remote one; optional agent and demo.

Embedded: the stores (embedded Redis/PostgreSQL unless configured) and the API start in a process of their own
(console/startup.py, console/child.py) while the console draws its first frame, and the console talks to the
API over HTTP with the same client it uses when attached, so both modes behave the same. Quitting stops that
process; "keep running" leaves it running as the state directory's background coordinator
(console/background.py); the next `aidd` there attaches to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiddclient import DEFAULT_URL
from aiddclient.client import CoordinatorClient
from console.background import AGENT_FILE, AGENT_MODULE, Detached, find_coordinator, recorded, stop_all
from console.localagent import NOT_AVAILABLE, LocalAgent, agent_available
from console.options import QuitChoice, QuitMode
from console.startup import EmbeddedStart, Started
from coordinator.config import Settings
from coordinator.errors import EmbeddedError
from coordinator.runtime import check_exposure

if TYPE_CHECKING:
    from console.demo.cluster import DemoCluster
    from console.demo.screen import RealScreen

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 10.0
"""How long the console waits for one answer before it says the coordinator does not answer."""


def _log_to_file(path: Path) -> None:
    """Send every log record (ours, uvicorn's) to `path`: the terminal belongs to the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = name == ""
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("aidd.access").setLevel(logging.WARNING)  # the console's own polls, several a second


def _home(path: Path) -> str:
    """`path` with the home directory written as ~ (shorter in the top bar)."""
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


def _operator_key(settings: Settings, api_key: str | None) -> str | None:
    """The key the embedded console uses: the one given, else the first operator key configured."""
    if api_key:
        return api_key
    return next((k.key for k in settings.api_keys if k.role == "operator"), None)


@dataclass(frozen=True)
class Flags:
    """The command line's switches for one console run."""

    local_agent: bool = False
    demo: bool = False
    read_only: bool = False
    real_screen: bool = False


@dataclass
class Target:
    """The coordinator a console talks to, what its top bar says, and what `q` asks there."""

    url: str
    api_key: str | None
    where: str
    quit_mode: QuitMode
    notices: list[str] = field(default_factory=list)


def run_console(settings: Settings, attach_url: str | None = None, api_key: str | None = None,
                local_agent: bool = False, demo: bool = False, read_only: bool = False,
                config: Path | None = None, real_screen: bool = False) -> int:
    """Run the console until the operator quits, then do what they chose; returns the exit code.

    Without `attach_url` the console attaches to the state directory's background coordinator if one runs, else
    starts the embedded coordinator's process; `config` is the config file that process is to read.
    """
    log_path = settings.state_dir / "console.log"
    _log_to_file(log_path)
    flags = Flags(local_agent, demo, read_only, real_screen)
    if attach_url:
        return _run(settings, Target(attach_url, api_key, f"attached · {attach_url}", "attached"), Companions(flags))[1]
    background = find_coordinator(settings.state_dir)
    if background is not None:
        return _on_background(settings, background, _operator_key(settings, api_key), flags)
    check_exposure(settings)
    key = _operator_key(settings, api_key)
    companions = Companions(flags)
    state = _home(settings.state_dir)

    def started(ready: Settings, url: str) -> Started:
        notices = companions.start(ready, url, key)
        where = f"embedded · {url.removeprefix('http://')} · state {state}{companions.where}"
        return Started(where, notices, companions.agent)

    startup = EmbeddedStart(settings, key, CLIENT_TIMEOUT_S, config, then=started).start()
    kept = None
    try:
        target = Target(DEFAULT_URL, key, f"embedded · state {state}", "embedded")  # the URL: once it answers
        choice, code = _run(settings, target, companions, startup)
        if choice is QuitChoice.KEEP_RUNNING:
            kept = startup.keep()
    finally:
        if kept is None:
            startup.stop()
    if startup.error:
        raise EmbeddedError(startup.error)
    if kept is not None:
        print(_kept_running(settings, kept))
    return code


class Companions:
    """What runs beside the console for its coordinator, as the flags ask: the local agent, the demo cluster and
    the real screen's submitter.

    Started once the coordinator's URL is known: at once when attached, when the API answers when embedded.
    """

    def __init__(self, flags: Flags) -> None:
        self.flags = flags
        self.agent: LocalAgent | None = None
        self.cluster: DemoCluster | None = None
        self.screen: RealScreen | None = None
        self.where = ""
        """What the top bar adds (` · local agent`)."""

    def start(self, settings: Settings, url: str, api_key: str | None) -> list[str]:
        """Start what the flags ask for on the coordinator at `url`; the notices to show."""
        notices: list[str] = []
        if self.flags.local_agent:
            if agent_available():
                self.agent = LocalAgent(url, settings.state_dir, token=settings.agent_token).start()
                self.where = " · local agent"
                notices += [self.agent.notice] if self.agent.notice else []
            else:
                notices.append(NOT_AVAILABLE)
        if self.flags.demo:
            from console.demo.cluster import DemoCluster

            self.cluster = DemoCluster(url, api_key, settings.agent_token, settings.state_dir).start()
        if self.flags.real_screen:
            from console.demo.screen import REAL_SCREEN, RealScreen

            self.screen = RealScreen(url, api_key).start()
            notices.append(REAL_SCREEN)
        return notices

    def stop(self, choice: QuitChoice | None) -> None:
        """Stop the demo cluster and the real screen's submitter; the local agent too on "stop everything" (else
        it runs on: see `_run`)."""
        if self.cluster is not None:
            self.cluster.stop()
        if self.screen is not None:
            self.screen.stop()
        if choice is QuitChoice.STOP and self.agent is not None:
            self.agent.stop()


def _run(settings: Settings, target: Target, companions: Companions,
         startup: EmbeddedStart | None = None) -> tuple[QuitChoice | None, int]:
    """The console on `target` until it exits: the operator's choice (None if it ended otherwise) and exit code.

    With `startup`, the coordinator is still coming up: the console shows so and connects when it answers (the
    companions start then). "Stop everything" stops the local agent here; otherwise it runs on (a crash, too, only
    interrupts the coordinator, which the agent rides through).
    """
    from console.factory import make_app  # Textual: imported once the embedded coordinator's process has started

    notices, where = list(target.notices), target.where
    if startup is None:
        notices += companions.start(settings, target.url, target.api_key)
        where += companions.where
    client = CoordinatorClient(target.url, target.api_key, timeout=CLIENT_TIMEOUT_S)
    app = make_app(client, where=where, read_only=companions.flags.read_only, demo=companions.flags.demo,
                   state_dir=settings.state_dir, notices=notices, local_agent=companions.agent,
                   quit_mode=target.quit_mode, freeze_gc=True, startup=startup)
    choice = None
    try:
        choice = app.run()
    finally:
        companions.stop(choice)
    return choice, app.return_code or 0


def _on_background(settings: Settings, coordinator: Detached, api_key: str | None, flags: Flags) -> int:
    """The console on the state directory's background coordinator; on quit, leave it running or stop it."""
    address = coordinator.url.removeprefix("http://")
    where = f"background coordinator · pid {coordinator.pid} · {address} · state {_home(settings.state_dir)}"
    choice, code = _run(settings, Target(coordinator.url, api_key, where, "background"), Companions(flags))
    if choice is QuitChoice.STOP:
        for line in stop_all(settings.state_dir):
            print(line)
    elif choice is QuitChoice.KEEP_RUNNING:
        print(f"the background coordinator (pid {coordinator.pid}) runs on at {coordinator.url}: `aidd` attaches "
              "to it again, `aidd stop` stops it")
    return code


def _kept_running(settings: Settings, coordinator: Detached) -> str:
    """The line that says where the coordinator left running in the background runs."""
    agent = recorded(settings.state_dir / AGENT_FILE, AGENT_MODULE)
    with_agent = f", with the local agent (pid {agent.pid})" if agent is not None else ""
    return (f"aidd runs on in the background{with_agent}: coordinator pid {coordinator.pid} at {coordinator.url}, "
            f"state {_home(settings.state_dir)}, log in coordinator.log there. `aidd` on this state directory "
            "attaches to it, `aidd stop` stops it.")
