"""Configuration: defaults, aidd.yml, AIDD_* overrides, one-line errors naming the key, and `aidd --serve` as a
real process (bad config exits 2; a good one answers /api/v1/health and stops cleanly on SIGTERM)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from coordinator.config import Settings, load_settings
from coordinator.errors import ConfigError
from tests.support.pids import gone
from tests.support.ports import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
FOREIGN_ENV = ("AIDD_", "REDIS_URL", "DATABASE_URL", "POSTGRES_", "MINIO_")


def load(tmp_path: Path, env: dict[str, str], config: str = "", **flags: Any) -> Settings:
    """load_settings on a config file of our own (never ./aidd.yml) and exactly this environment."""
    path = tmp_path / "aidd.yml"
    path.write_text(config)
    return load_settings(path, env=env, **flags)


def config_error(tmp_path: Path, env: dict[str, str], config: str = "") -> str:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, env, config)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_defaults(tmp_path: Path) -> None:
    """With nothing configured the documented defaults apply."""
    settings = load(tmp_path, {})
    assert (settings.heartbeat_interval, settings.heartbeat_timeout, settings.heartbeat_check_interval) == (10, 30, 10)
    assert (settings.retry_base_delay, settings.task_timeout, settings.max_retries) == (60, 300, 3)
    assert (settings.max_pending_per_service, settings.host, settings.port) == (10_000, "127.0.0.1", 8333)
    assert settings.api_keys == [] and settings.agent_token is None and settings.redis_url is None


@pytest.mark.parametrize(("variable", "value", "field", "expected"), [
    ("AIDD_HEARTBEAT_TIMEOUT", "45", "heartbeat_timeout", 45.0),
    ("AIDD_HEARTBEAT_INTERVAL", "2.5", "heartbeat_interval", 2.5),
    ("AIDD_HEARTBEAT_CHECK_INTERVAL", "3", "heartbeat_check_interval", 3.0),
    ("AIDD_RETRY_BASE_DELAY", "1.5", "retry_base_delay", 1.5),
    ("AIDD_TASK_TIMEOUT", "60", "task_timeout", 60),
    ("AIDD_STATE_DIR", "/srv/aidd", "state_dir", Path("/srv/aidd")),
    ("AIDD_REDIS_URL", "redis://cache:6379/0", "redis_url", "redis://cache:6379/0"),
    ("AIDD_DATABASE_URL", "postgresql://db/aidd", "database_url", "postgresql://db/aidd"),
    ("AIDD_EMBEDDED", "postgres", "embedded", ["postgres"]),
    ("AIDD_AGENT_TOKEN", "enrol-me-please", "agent_token", "enrol-me-please"),
    ("AIDD_SERVICE_LIMITS", "docking=8,admet=32", "service_limits", {"docking": 8, "admet": 32}),
    ("AIDD_ALLOW_SHELL_TASKS", "false", "allow_shell_tasks", False),
    ("AIDD_MAX_PENDING_PER_SERVICE", "50", "max_pending_per_service", 50),
    ("REDIS_URL", "redis://conventional:6379/1", "redis_url", "redis://conventional:6379/1"),
    ("DATABASE_URL", "postgresql://conventional/aidd", "database_url", "postgresql://conventional/aidd"),
])
def test_environment_overrides(tmp_path: Path, variable: str, value: str, field: str, expected: Any) -> None:
    """Each AIDD_<KEY> (and the conventional REDIS_URL / DATABASE_URL) sets its key."""
    assert getattr(load(tmp_path, {variable: value}), field) == expected


def test_api_keys_env_form(tmp_path: Path) -> None:
    """AIDD_API_KEYS takes `key`, `role:key` and `name:role:key`, comma-separated."""
    settings = load(tmp_path, {"AIDD_API_KEYS": "plain-key-123, read:read-key-123 ,ci:submit:ci-key-1234"})
    assert [(k.name, k.role, k.key) for k in settings.api_keys] == [
        ("key1", "operator", "plain-key-123"), ("read2", "read", "read-key-123"), ("ci", "submit", "ci-key-1234")]


def test_postgres_variables_build_a_url(tmp_path: Path) -> None:
    """POSTGRES_HOST/PORT/USER/PASSWORD/DB make the database URL when DATABASE_URL is not set."""
    env = {"POSTGRES_HOST": "db", "POSTGRES_PORT": "6543", "POSTGRES_USER": "aidd", "POSTGRES_PASSWORD": "pw",
           "POSTGRES_DB": "screening"}
    assert load(tmp_path, env).database_url == "postgresql://aidd:pw@db:6543/screening"


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    """aidd.yml is overridden by AIDD_* variables (which win over REDIS_URL), which are overridden by flags."""
    config = "heartbeat_timeout: 40\nport: 9000\ntask_timeout: 120\nredis_url: redis://file/0\n"
    env = {"AIDD_HEARTBEAT_TIMEOUT": "50", "AIDD_PORT": "9100", "REDIS_URL": "redis://conventional/0",
           "AIDD_REDIS_URL": "redis://aidd/0"}
    settings = load(tmp_path, env, config, port=9200)
    assert (settings.task_timeout, settings.heartbeat_timeout, settings.port) == (120, 50, 9200)
    assert settings.redis_url == "redis://aidd/0"


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("AIDD_HEARTBEAT_TIMEOUT", "soon", ["valid number", "'soon'"]),
    ("AIDD_HEARTBEAT_TIMEOUT", "-1", ["greater than 0"]),
    ("AIDD_PORT", "99999", ["less than or equal to 65535"]),
    ("AIDD_TASK_TIMEOUT", "1.5", ["integer"]),
    ("AIDD_SERVICE_LIMITS", "docking=many", ["docking", "integer"]),
    ("AIDD_KEY_PREFIX", "a b", ["pattern"]),
    ("AIDD_ALLOW_SHELL_TASKS", "perhaps", ["boolean"]),
])
def test_bad_environment_value_names_the_variable(tmp_path: Path, variable: str, value: str,
                                                  words: list[str]) -> None:
    """A bad AIDD_* value is a ConfigError of one line that starts with the variable's name."""
    message = config_error(tmp_path, {variable: value})
    assert message.startswith(f"{variable}: ")
    for word in words:
        assert word in message


def test_bad_secret_is_not_echoed(tmp_path: Path) -> None:
    """A bad api key or URL is named, but its value is not repeated in the message."""
    message = config_error(tmp_path, {"AIDD_API_KEYS": "operator:short"})
    assert message.startswith("AIDD_API_KEYS: ") and "short" not in message


@pytest.mark.parametrize(("config", "words"), [
    ("colour: blue\n", ["colour: unknown key"]),
    ("heartbeat_timeout: soon\n", ["heartbeat_timeout: ", "'soon'"]),
    ("heartbeat_timeout: [1\n", ["aidd.yml", "cannot read config"]),
    ("- just\n- a list\n", ["aidd.yml", "mapping"]),
])
def test_bad_config_file(tmp_path: Path, config: str, words: list[str]) -> None:
    """Unknown keys, bad values, broken YAML and a file that is not a mapping are each one clear line."""
    message = config_error(tmp_path, {}, config)
    for word in words:
        assert word in message


def test_shipped_aidd_yml_loads_to_the_defaults(tmp_path: Path) -> None:
    """The documented aidd.yml (every key commented out) is valid and changes nothing."""
    settings = load(tmp_path, {}, (ROOT / "aidd.yml").read_text())
    assert settings == load(tmp_path, {})


# -- aidd --serve as a real process ---------------------------------------------------------------------------


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without any aidd / store settings, importing the source tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    return {**env, "PYTHONPATH": str(ROOT), "XDG_DATA_HOME": str(tmp_path / "xdg"), **extra}


def aidd(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m aiddclient.cli ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "aiddclient.cli", *args], cwd=tmp_path, env=clean_env(tmp_path,
                          **env), capture_output=True, text=True, timeout=60, check=False)


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aidd: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0]


def test_serve_with_a_bad_value_exits_2_with_one_line(tmp_path: Path) -> None:
    """`AIDD_HEARTBEAT_TIMEOUT=abc aidd --serve` prints one line naming the variable and exits 2."""
    done = aidd(tmp_path, "--serve", AIDD_HEARTBEAT_TIMEOUT="abc")
    assert_one_line_error(done, "AIDD_HEARTBEAT_TIMEOUT", "'abc'")


def test_serve_beyond_loopback_needs_keys_and_a_token(tmp_path: Path) -> None:
    """`aidd --serve --host 0.0.0.0` refuses to start without api_keys, then without an agent token."""
    assert_one_line_error(aidd(tmp_path, "--serve", "--host", "0.0.0.0"), "api_keys")
    assert_one_line_error(aidd(tmp_path, "--serve", "--host", "0.0.0.0", AIDD_API_KEYS="op-key-123456"),
                          "agent_token")


@pytest.fixture
def serving_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`aidd --serve` on a free port with its own state directory (killed if a test leaves it running).

    The state directory is not under pytest's temporary root: as root, PostgreSQL runs as another user that
    must traverse it, and a pytest session starting meanwhile makes that root private again.
    """
    port = free_port()
    state_dir = Path(tempfile.mkdtemp(prefix="aidd-serve-"))
    process = subprocess.Popen([sys.executable, "-m", "aiddclient.cli", "--serve", "--port", str(port),
                                "--state-dir", str(state_dir)], cwd=tmp_path, env=clean_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(state_dir, ignore_errors=True)


def health(url: str) -> dict[str, Any] | None:
    try:
        reply = httpx.get(f"{url}/api/v1/health", timeout=2)
    except httpx.HTTPError:
        return None
    return dict(reply.json()) if reply.status_code == 200 else None


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_health_and_stops_cleanly(serving_process: tuple[subprocess.Popen[str], str],
                                                stop: signal.Signals) -> None:
    """A real `aidd --serve` starts its embedded Redis and PostgreSQL, answers /api/v1/health, exits 0 on
    SIGTERM or SIGINT and leaves no server process behind."""
    process, url = serving_process
    report = wait_until(lambda: health(url) if process.poll() is None else {"exited": process.returncode},
                      timeout=90, interval=0.2, what="aidd --serve to answer")
    assert "exited" not in report, process.communicate()[1]
    assert report["status"] == "ok" and report["redis"] == "ok" and report["postgres"] == "ok", report
    children = psutil.Process(process.pid).children(recursive=True)
    names = {c.name() for c in children}
    assert any("redis" in n for n in names) and any("postgres" in n for n in names), names
    process.send_signal(stop)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 15
    while not all(gone(c.pid) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [c.pid for c in children if not gone(c.pid)] == []
