"""The `aidd-agent` command (also `aidd agent ...`): flags, their environment variables, and clear errors.

Every flag has an environment variable, so a container or a systemd unit can configure the agent
without a command line. Bad values stop it with one line naming the flag or variable (exit 2); an
unreachable coordinator is not an error: the agent says so and keeps trying.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from nodeagent import __version__
from nodeagent.agent import Agent, AgentConfig, AgentError
from nodeagent.gpu import GpuProbe, probe_from_env
from nodeagent.inventory import NAME, Host, describe_host, serve_groups
from nodeagent.logsetup import LOG_FORMATS, LOG_LEVELS, configure_logging
from nodeagent.plugins import discover, modules_from

EXIT_USAGE = 2
T = TypeVar("T")


class UsageError(Exception):
    """A bad flag or environment value; the message names it."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"aidd-agent: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The agent's command line (documented in the README, section "Node agent")."""
    p = _Parser(prog="aidd-agent", description="AIDD node agent: runs tasks from a coordinator on this host.")
    add = p.add_argument
    add("--url", metavar="URL", action="append", default=[],
        help="coordinator URL, repeatable or comma-separated: several coordinators sharing their stores, tried in "
             "turn ($AIDD_URL, or $MASTER_URL; default http://127.0.0.1:8333)")
    add("--token", metavar="TOKEN", help="registration token ($AIDD_AGENT_TOKEN)")
    add("--group", metavar="G", action="append", default=[],
        help="group to serve, repeatable ($WORKER_GROUP, comma-separated; default: the detected one + default)")
    add("--label", metavar="L", action="append", default=[], help="capability label, repeatable ($AIDD_LABELS)")
    add("--service", metavar="S", action="append", default=[],
        help="service to serve, repeatable; none: any ($AIDD_SERVICES)")
    add("--slots", metavar="N", help="tasks run at once ($AIDD_SLOTS, default: CPU cores)")
    add("--work-dir", metavar="DIR", help="where each task gets its working dir ($AIDD_WORK_DIR, default in TMPDIR)")
    add("--heartbeat-interval", metavar="SECONDS",
        help="seconds between heartbeats ($AIDD_HEARTBEAT_INTERVAL; default: what the coordinator says)")
    add("--grace", metavar="SECONDS",
        help="seconds tasks get to finish on SIGTERM before being handed back ($AIDD_GRACE, default 20)")
    add("--kill-grace", metavar="SECONDS",
        help="seconds between SIGTERM and SIGKILL of a task ($AIDD_KILL_GRACE, default 5)")
    add("--disconnect-grace", metavar="SECONDS",
        help="seconds running tasks go on while no coordinator answers, e.g. during an upgrade "
             "($AIDD_DISCONNECT_GRACE, default 900); exclusive tasks stop before the heartbeat timeout")
    add("--plugin-module", metavar="MODULE", action="append", default=[],
        help="Python module with @task_type plugins, repeatable ($AIDD_PLUGIN_MODULES, comma-separated)")
    add("--hostname", metavar="NAME", help="name to register with ($AIDD_HOSTNAME, default: this host's name)")
    p.add_argument("--keep-work-dirs", action="store_true", help="keep each task's working dir after it ends")
    p.add_argument("--fresh-plugin-process", action="store_true",
                   help="run each plugin task in a new interpreter, not a warm plugin host "
                        "($AIDD_FRESH_PLUGIN_PROCESS=1)")
    p.add_argument("--log-level", default=os.environ.get("AIDD_LOG_LEVEL", "info").lower(), choices=LOG_LEVELS,
                   help="($AIDD_LOG_LEVEL, default info)")
    p.add_argument("--log-format", default=os.environ.get("AIDD_LOG_FORMAT", "text").lower(), choices=LOG_FORMATS,
                   help="text lines, or one JSON object a line for log collectors ($AIDD_LOG_FORMAT, default text)")
    p.add_argument("--list-task-types", action="store_true", help="print the task types this agent runs and exit")
    p.add_argument("--version", action="version", version=f"aidd-agent {__version__}")
    return p


def _value(flag: str | None, env: Mapping[str, str], var: str, name: str, convert: Callable[[str], T],
           default: T) -> T:
    raw = flag if flag is not None else env.get(var)
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except ValueError as exc:
        where = name if flag is not None else var
        raise UsageError(f"{where}: {exc}") from None


def _positive(kind: Callable[[str], T], allow_zero: bool = False) -> Callable[[str], T]:
    def convert(raw: str) -> T:
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"not a number: {raw!r}") from None
        if value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
            raise ValueError(f"must be {'>= 0' if allow_zero else '> 0'}, got {raw!r}")
        return value
    return convert


def _names(flags: Sequence[str], env: Mapping[str, str], var: str, name: str) -> list[str]:
    values = [v.strip() for raw in (flags or [env.get(var, "")]) for v in raw.split(",") if v.strip()]
    for value in values:
        if not NAME.match(value):
            where = name if flags else var
            raise UsageError(f"{where}: {value!r} is not a valid name (letters, digits, '_', '.', '-'; up to 100)")
    return values


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[AgentConfig, Host, GpuProbe]:
    """(AgentConfig, Host, GpuProbe) from flags and environment.

    Raises:
        UsageError: a bad value; the message names the flag or the variable.
    """
    variable = "AIDD_URL" if env.get("AIDD_URL") or not env.get("MASTER_URL") else "MASTER_URL"  # Workers API's
    raw_urls = args.url or [env.get(variable) or "http://127.0.0.1:8333"]
    urls = [u.strip() for raw in raw_urls for u in raw.split(",") if u.strip()]
    for url in urls or [""]:
        if not url.startswith(("http://", "https://")):
            where = "--url" if args.url else variable
            raise UsageError(f"{where}: must start with http:// or https://, got {url!r}")
    modules = modules_from(args.plugin_module or [env.get("AIDD_PLUGIN_MODULES", "")])
    for module in modules:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise UsageError(f"--plugin-module {module}: no such module on this Python's path")
    slots = _value(args.slots, env, "AIDD_SLOTS", "--slots", _positive(int), 0)
    if slots > 10_000:
        raise UsageError(f"--slots: at most 10000, got {slots}")
    work_dir = Path(args.work_dir or env.get("AIDD_WORK_DIR") or Path(tempfile.gettempdir()) /
                    f"aidd-work-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    config = AgentConfig(
        urls=urls, token=args.token or env.get("AIDD_AGENT_TOKEN") or None, work_dir=work_dir.absolute(),
        plugin_modules=modules, keep_work_dirs=args.keep_work_dirs,
        fresh_plugin_process=args.fresh_plugin_process or env.get("AIDD_FRESH_PLUGIN_PROCESS", "") in ("1", "true"),
        heartbeat_interval=_value(args.heartbeat_interval, env, "AIDD_HEARTBEAT_INTERVAL", "--heartbeat-interval",
                                  _positive(float), None),
        grace=_value(args.grace, env, "AIDD_GRACE", "--grace", _positive(float, allow_zero=True), 20.0),
        kill_grace=_value(args.kill_grace, env, "AIDD_KILL_GRACE", "--kill-grace", _positive(float, True), 5.0),
        disconnect_grace=_value(args.disconnect_grace, env, "AIDD_DISCONNECT_GRACE", "--disconnect-grace",
                                _positive(float, True), 900.0),
        adopt_orphans=True)
    groups = serve_groups(_names(args.group, env, "WORKER_GROUP", "--group"), env)
    labels = _names(args.label, env, "AIDD_LABELS", "--label")
    services = _names(args.service, env, "AIDD_SERVICES", "--service")
    try:
        probe = probe_from_env(env)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    host = describe_host(probe.inventory(), groups, labels, services, int(slots) or None,
                         hostname=args.hostname or env.get("AIDD_HOSTNAME"))
    return config, host, probe


def _runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's runner where it is installed (the agent's loop does a few dozen callbacks per task), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `aidd-agent` (and `aidd agent`)."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format, "%(asctime)s aidd-agent %(levelname)s %(message)s")
    try:
        if args.list_task_types:
            modules = modules_from(args.plugin_module or [os.environ.get("AIDD_PLUGIN_MODULES", "")])
            print("\n".join(sorted({"shell", *discover(modules)})))
            return 0
        config, host, probe = config_from(args, os.environ)
        try:
            return _runner()(Agent(config, host, probe).run())
        except AgentError as exc:
            print(f"aidd-agent: {exc}", file=sys.stderr)
            return EXIT_USAGE
    except UsageError as exc:
        print(f"aidd-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:
        print(f"aidd-agent: cannot load plugins: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
