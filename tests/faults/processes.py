"""The real processes of the fault suite: dedicated stores, coordinators and agents, each stopped by its pid.

Every process is a child of the test process with its output appended to a log file (scanned for
secrets and printed when a test fails). Nothing here waits without a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import psycopg
import redis

from coordinator.embedded import EmbeddedServers, start_embedded
from tests.support.pids import gone
from tests.support.ports import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie counts as gone)."""
    return not gone(pid)


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without any AIDD_* / store settings, plus `extra`; the repository on PYTHONPATH."""
    drop = ("AIDD_", "WORKER_GROUP", "REDIS_URL", "DATABASE_URL", "POSTGRES_", "MINIO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class Proc:
    """One child process; its stdout and stderr appended to `log_path` across restarts."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, list(argv), dict(env), log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        """Start (again); the previous run must have ended."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is still running"
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.name} at {time.time():.3f} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send a signal by pid (SIGKILL, SIGSTOP, SIGCONT, ...)."""
        if self.running():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """kill -9, and wait for it to be gone."""
        if self.proc is not None and self.running():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(15)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGCONT + SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.running():
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Coordinator(Proc):
    """`python -m aiddclient.cli --serve` on a fixed loopback port (kept across restarts)."""

    def __init__(self, name: str, work: Path, settings: Mapping[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        config = work / "empty.yml"
        config.write_text("{}\n")
        env = clean_env({"AIDD_CONFIG": str(config), "AIDD_PORT": str(self.port), **settings})
        super().__init__(name, [sys.executable, "-m", "aiddclient.cli", "--serve"], env, work / f"{name}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> int | None:
        """The status code of /api/v1/health, None when it does not answer."""
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 60.0) -> Coordinator:
        """Wait until it answers healthy (fails early if it exited)."""
        def ready() -> bool:
            if not self.running():
                raise AssertionError(f"coordinator {self.name} exited:\n{self.output[-3000:]}")
            return self.health() == 200
        wait_until(ready, timeout, f"coordinator {self.name} to be healthy", 0.1)
        return self


class Agent(Proc):
    """`python -m nodeagent.cli` with FAULT_HOST set (the recorder writes it into its records)."""

    def __init__(self, name: str, work: Path, url: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        argv = [sys.executable, "-m", "nodeagent.cli", "--url", url, "--hostname", name, "--work-dir",
                str(work / f"{name}-tasks"), "--kill-grace", "1", *args]
        super().__init__(name, argv, clean_env({"FAULT_HOST": name, **(env or {})}), work / f"{name}.log")


class Stores:
    """A dedicated embedded Redis and PostgreSQL that scenarios may flush, stop and restart.

    Restarts reuse the same command line (same socket, same port, same data), as an operator's
    service manager would. Each scenario gets a database of its own on the one PostgreSQL server.
    """

    def __init__(self, state_dir: Path) -> None:
        self.embedded: EmbeddedServers = start_embedded(state_dir)
        self.redis_url = self.embedded.redis_url
        # The embedded servers' own command lines (redis-server rewrites its process title, so not from /proc).
        started = {"redis": self.embedded._redis, "postgres": self.embedded._postgres}
        self._servers: dict[str, psutil.Process | subprocess.Popen[bytes]] = {
            name: psutil.Process(proc.pid) for name, proc in started.items()}
        self._commands = {name: self._command_of(proc) for name, proc in started.items()}

    @staticmethod
    def _command_of(proc: subprocess.Popen[bytes]) -> tuple[list[str], str, str]:
        info = psutil.Process(proc.pid)
        return [str(a) for a in proc.args], info.cwd(), info.username()  # type: ignore[union-attr]

    @property
    def pg_port(self) -> int:
        argv = self._commands["postgres"][0]
        return int(argv[argv.index("-p") + 1])

    def database(self, name: str) -> str:
        """Create a fresh database; returns its URL (asyncpg form, as the coordinator takes it)."""
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.pg_port}/{name}"

    def conninfo(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.pg_port} user=postgres dbname={database} connect_timeout=5"

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=10)

    def flushall(self) -> None:
        with self.redis() as client:
            client.flushall()

    def stop_server(self, name: str) -> None:
        """Stop Redis (SIGTERM: it saves its AOF) or PostgreSQL (SIGINT: fast shutdown) and wait."""
        proc = self._servers[name]
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            proc.send_signal(signal.SIGTERM if name == "redis" else signal.SIGINT)
            proc.wait(30)

    def start_server(self, name: str, ready_timeout: float = 30.0) -> None:
        """Start a stopped server again with its old command line, and wait until it answers."""
        argv, cwd, user = self._commands[name]
        as_user = user if os.geteuid() == 0 and user != "root" else None
        with (Path(cwd) / f"{name}-restart.log").open("ab") as log:
            self._servers[name] = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True,
                                                   user=as_user, group=as_user)
        wait_until(lambda: self._answers(name), ready_timeout, f"{name} to answer again", 0.1)

    def _answers(self, name: str) -> bool:
        try:
            if name == "redis":
                with redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1) as client:
                    return bool(client.ping())
            with psycopg.connect(self.conninfo("postgres")) as conn:
                return conn.execute("SELECT 1").fetchone() is not None
        except (redis.RedisError, psycopg.Error, OSError):
            return False

    def close(self) -> None:
        """Stop restarted servers by pid, then the embedded ones (and release the state directory)."""
        for name, proc in self._servers.items():
            if isinstance(proc, subprocess.Popen) and proc.poll() is None:
                self.stop_server(name)
        self.embedded.stop()
