"""The `aidd` command: the console (default), `--serve` (headless), and small commands for scripts.

The commands for scripts (`aidd tasks`, `show`, `submit`, ...) must start fast: this module imports only what
they need (httpx, the standard library); the server's libraries (pydantic, sqlalchemy, starlette, textual,
redis) are imported where the console, `--serve`, `files` or `stop` need them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from aiddclient import DEFAULT_URL
from aiddclient.resultsfile import FORMATS
from coordinator.dbcli import add_db_parser
from coordinator.errors import ConfigError, EmbeddedError
from coordinator.states import ReasonCode
from nodeagent.logsetup import LOG_FORMATS, LOG_LEVELS, configure_logging

EXIT_USAGE = 2
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("AIDD_URL", DEFAULT_URL),
                        help="coordinator URL (default $AIDD_URL or %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("AIDD_API_KEY"), help="API key (default $AIDD_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", action="append", default=[], help="pending, running, succeeded, failed, ...")
    parser.add_argument("--service", action="append", default=[])
    parser.add_argument("--group", action="append", default=[])
    parser.add_argument("--batch", dest="batch_id", help="batch id (or a unique prefix)")
    parser.add_argument("--worker", dest="worker_id", help="worker id (or a unique prefix): the tasks it ran last")
    parser.add_argument("-q", "--search", dest="q", default="",
                        help="text in the name, type, id, status, service, group, worker or parameters")
    parser.add_argument("--reason", action="append", default=[], choices=[c.value for c in ReasonCode],
                        help="pending tasks waiting for this reason (repeatable)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2 (its sub-commands are built with this class too)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (also documented in the README)."""
    parser = _Parser(prog="aidd", description="AIDD console and scheduler for drug-discovery compute.")
    parser.add_argument("--config", type=Path, help="config file (default $AIDD_CONFIG or ./aidd.yml)")
    parser.add_argument("--state-dir", type=Path, help="where the embedded Redis/PostgreSQL keep their data")
    parser.add_argument("--host", help="API bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="API port (default 8333)")
    parser.add_argument("--serve", action="store_true", help="run the coordinator headless (no console)")
    parser.add_argument("--attach", metavar="URL", help="console on a remote coordinator")
    parser.add_argument("--api-key", default=os.environ.get("AIDD_API_KEY"), help="API key for --attach")
    parser.add_argument("--local-agent", action="store_true", help="also run an agent on this machine")
    parser.add_argument("--demo", nargs="?", const="cluster", choices=("cluster", "real"),
                        help="seed a demo: a simulated cluster (the default), or `real`: a real screen of approved "
                             "drugs on a local agent with the chem task pack")
    parser.add_argument("--read-only", action="store_true", help="console without destructive keys")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="least severe record logged (default info)")
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="--serve's log: text lines or one JSON object a line (default text)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    submit = sub.add_parser("submit", help="submit one task, or a batch from a file (--file)")
    submit.add_argument("service")
    submit.add_argument("task_type")
    submit.add_argument("--name", default="", help="the task's name; with --file, the batch's (default: the file's)")
    submit.add_argument("--params", default="{}", help="input_params as a JSON object")
    submit.add_argument("--priority", type=int)
    submit.add_argument("--group")
    submit.add_argument("--label", action="append", default=[])
    submit.add_argument("--cpu", type=float)
    submit.add_argument("--memory-gb", type=float)
    submit.add_argument("--gpu", type=float)
    submit.add_argument("--gpu-memory-gb", type=float)
    submit.add_argument("--max-retries", type=int)
    submit.add_argument("--timeout", type=int, dest="timeout_s")
    submit.add_argument("--file", type=Path, help="batch: one input per line (e.g. SMILES), or a JSON list")
    submit.add_argument("--param-name", default="smiles", help="input_params key of each line of --file")
    submit.add_argument("--chunk", type=int, metavar="N", help="with --file: N inputs per task, as lists "
                        "(input_params.smiles and .names: a campaign whose results gather with `aidd results`)")
    submit.add_argument("--outputs", action="append", default=[], metavar="GLOB",
                        help="files the task writes to keep in the object store (e.g. '*.sdf')")
    _client_options(submit)

    tasks = sub.add_parser("tasks", help="list tasks")
    _filter_options(tasks)
    tasks.add_argument("--page", type=int, default=1)
    tasks.add_argument("--page-size", type=int, default=50)
    _client_options(tasks)

    workers = sub.add_parser("workers", help="list workers; `workers rm ID…` removes offline ones")
    workers.add_argument("action", nargs="?", choices=["rm"], help="rm: delete offline workers from the record")
    workers.add_argument("ids", nargs="*", metavar="ID", help="with rm: worker ids or unique prefixes")
    workers.add_argument("--group")
    workers.add_argument("--status")
    _client_options(workers)

    services = sub.add_parser("services", help="list services; pause, resume or limit one")
    services.add_argument("name", nargs="?", help="the service to change (none: list every service)")
    pause = services.add_mutually_exclusive_group()
    pause.add_argument("--pause", action="store_true", help="its pending tasks wait; running ones go on")
    pause.add_argument("--resume", action="store_true")
    services.add_argument("--limit", type=_limit, default=argparse.SUPPRESS,
                          help="most of its tasks running at once (`none`: the configured service_limits, if any)")
    services.add_argument("--description")
    _client_options(services)

    for action in ("cancel", "retry", "requeue"):
        act = sub.add_parser(action, help=f"{action} tasks by id, or every task matching --filter options")
        act.add_argument("ids", nargs="*")
        _filter_options(act)
        act.add_argument("--all", action="store_true", help="with no filter: really every task")
        _client_options(act)

    show = sub.add_parser("show", help="one task in full: why it waits, fields, parameters, result or error, "
                                       "attempts, timeline")
    show.add_argument("task_id")
    _client_options(show)

    logs = sub.add_parser("logs", help="a task's log (its stderr lines to stderr); -f follows it to the end")
    logs.add_argument("task_id")
    logs.add_argument("-f", "--follow", action="store_true", help="print new lines until the task has finished")
    logs.add_argument("--raw", action="store_true", help="the lines as the task wrote them, terminal escapes included")
    _client_options(logs)

    wait = sub.add_parser("wait", help="wait for tasks (ids, or --batch) to finish; exit 0 only if all succeeded")
    wait.add_argument("ids", nargs="*", help="task ids (each asked for every second: for many, use --batch)")
    wait.add_argument("--batch", dest="batch_id", help="every task of this batch (its id or a unique prefix)")
    wait.add_argument("--timeout", type=float, help="give up after this many seconds (exit 124)")
    _client_options(wait)

    files = sub.add_parser("files", help="list a task's files; --download DIR fetches its outputs")
    files.add_argument("task_id")
    files.add_argument("--download", type=Path, metavar="DIR", help="download the outputs into DIR")
    files.add_argument("--attempt", type=int, help="whose outputs (default: the latest attempt with outputs)")
    files.add_argument("--inputs", action="store_true", help="download the inputs instead of the outputs")
    _client_options(files)

    results = sub.add_parser("results", help="a batch's results as one table: a row per molecule of every task")
    results.add_argument("--batch", dest="batch_id", required=True, help="batch id (or a unique prefix)")
    results.add_argument("--format", dest="fmt", choices=FORMATS, default="csv", help="default %(default)s")
    results.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE (default stdout)")
    results.add_argument("--url", default=os.environ.get("AIDD_URL", DEFAULT_URL),
                         help="coordinator URL (default $AIDD_URL or %(default)s)")
    results.add_argument("--api-key", default=os.environ.get("AIDD_API_KEY"), help="API key (default $AIDD_API_KEY)")

    stop = sub.add_parser("stop", help="stop what runs in the background for a state directory: the background "
                                       "coordinator and the local agent")
    stop.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config file (as for aidd)")
    stop.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help="the state directory (as for aidd)")

    add_db_parser(sub)
    sub.add_parser("agent", help="run the node agent (same as aidd-agent)", add_help=False)
    return parser


def _limit(value: str) -> int | None:
    """A --limit value: a count of at least 0, or `none`."""
    if value.lower() == "none":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"not a count or `none`: {value!r}")
    return int(value)


def _run_program(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.attach:
        check_url(args.attach, argv, "--attach", "--attach")
    if args.demo == "real":  # before anything starts (or configures the log)
        from console.demo.screen import missing_packages

        if missing := missing_packages():
            raise ConfigError(f"--demo real: the chem task pack is not installed (no {', '.join(missing)}): "
                              "pip install torch==2.13.0 'aidd[chem]'")
    from coordinator.config import load_settings

    settings = load_settings(args.config, state_dir=args.state_dir, host=args.host, port=args.port,
                             log_level=args.log_level, log_format=args.log_format)
    _configure_logging(settings.log_level, settings.log_format)
    if args.serve:
        from coordinator.runtime import check_exposure, stores
        from coordinator.server import serve_forever

        check_exposure(settings)
        with stores(settings) as ready:
            serve_forever(ready)
        return 0
    from console.launch import run_console

    return run_console(settings, attach_url=args.attach, api_key=args.api_key,
                       local_agent=args.local_agent or args.demo == "real", demo=args.demo == "cluster",
                       real_screen=args.demo == "real", read_only=args.read_only, config=args.config)


def _configure_logging(level: str, log_format: str) -> None:
    """One format for every record on stderr (ours, uvicorn's, alembic's); the chatty libraries only above info."""
    configure_logging(level, log_format, TEXT_LOG_FORMAT)
    quiet = max(logging.WARNING, logging.getLogger().level)
    logging.getLogger("alembic").setLevel(quiet)
    logging.getLogger("urllib3").setLevel(max(logging.ERROR, quiet))  # the MinIO client's retries: we report outages


def _stop(args: argparse.Namespace) -> int:
    """`aidd stop`: on this machine, not over HTTP: it ends the processes the state directory's pid files name."""
    from console.background import stop_all
    from coordinator.config import load_settings

    state_dir = load_settings(args.config, state_dir=args.state_dir).state_dir
    stopped = stop_all(state_dir)
    if not stopped:
        print(f"aidd stop: nothing runs in the background for {state_dir}", file=sys.stderr)
        return 1
    print("\n".join(stopped))
    return 0


def _guarded(run: Callable[[], int]) -> int:
    """`run`, its errors as one line and an exit status (the client is imported here, not for `--help`)."""
    from aiddclient.client import ApiError

    try:
        return run()
    except ConfigError as exc:
        print(f"aidd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (EmbeddedError, ApiError) as exc:
        print(f"aidd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def check_url(value: str, argv: Sequence[str], flag: str, variable: str) -> None:
    """Refuse a coordinator URL without an http(s) scheme and a host, naming the flag or variable it came from.

    Raises:
        ConfigError: one line, e.g. `--url: not an http(s) URL: 'localhost:8333' (e.g. http://127.0.0.1:8333)`.
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        given = any(a == flag or a.startswith(f"{flag}=") for a in argv)
        raise ConfigError(f"{flag if given else variable}: not an http(s) URL: {value!r} (e.g. {DEFAULT_URL})")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `aidd` console script; a reader that goes away (`aidd tasks | head`) ends it quietly."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to say, even at exit
        return 128 + signal.SIGPIPE


def _main(argv: list[str]) -> int:
    if argv[:1] == ["agent"]:
        from nodeagent.cli import main as agent_main

        return agent_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "stop":
        return _guarded(lambda: _stop(args))
    if args.command == "db":
        configure_logging(args.log_level or "info", args.log_format or "text", "%(message)s")
        from coordinator.dbcli import run_db

        return _guarded(lambda: run_db(args))
    if args.command:
        return _guarded(lambda: _client_command(args, argv))
    return _guarded(lambda: _run_program(args, argv))


def _client_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    check_url(args.url, argv, "--url", "AIDD_URL")
    import asyncio

    from aiddclient.clientcommands import run_client

    return asyncio.run(run_client(args))


if __name__ == "__main__":
    raise SystemExit(main())
