"""Configuration: `aidd.yml` plus `AIDD_*` environment overrides, validated in one place."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from coordinator.errors import ConfigError

Role = Literal["operator", "read", "submit"]
Part = Literal["redis", "postgres"]
"""A store that can run embedded: the redis-server or the PostgreSQL of the state directory."""
log = logging.getLogger(__name__)
ENV_PREFIX = "AIDD_"
SECRET_KEYS = frozenset({"api_keys", "agent_token", "redis_url", "database_url", "minio_secret_key"})
MINIO_ENV = ("endpoint", "public_endpoint", "access_key", "secret_key", "bucket", "secure", "region")
"""Settings `minio_<name>` also read from the conventional MINIO_<NAME> variables."""


class ApiKey(BaseModel):
    """One client API key with its role."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=100)
    key: str = Field(min_length=8)
    role: Role = "operator"
    profile: Literal["aidd", "aiflow", "llm"] = "aidd"
    """Whose status words this key's answers use (coordinator/compat.py): an older system's clients unchanged."""


class Settings(BaseModel):
    """Every setting of the coordinator, with its default."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)

    state_dir: Path = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "aidd"
    """Where the embedded Redis and PostgreSQL keep their data (default: $XDG_DATA_HOME/aidd)."""
    redis_url: str | None = None
    """External Redis URL; unset starts the embedded redis-server (also read from REDIS_URL)."""
    database_url: str | None = None
    """External PostgreSQL URL; unset starts the embedded PostgreSQL (also DATABASE_URL / POSTGRES_*)."""
    embedded: list[Part] = []
    """Stores to run embedded beside an external one: `postgres` with only a Redis URL, `redis` with only a
    database URL (env form: `AIDD_EMBEDDED=postgres`). Without it such a half-external setup is refused: it
    would quietly split a deployment over private stores. No URL at all embeds both; both URLs, none."""
    key_prefix: str = Field(default="aidd", pattern=r"^[A-Za-z0-9_.-]+$")
    """Prefix of every Redis key (default `aidd`)."""
    host: str = "127.0.0.1"
    """Address the HTTP API binds to (default loopback; any other address requires api_keys)."""
    port: int = Field(default=8333, ge=0, le=65535)
    """Port of the HTTP API (default 8333)."""
    api_keys: list[ApiKey] = []
    """Client keys. Env form: comma-separated `key`, `role:key` or `name:role:key` (role: operator/read/submit)."""
    agent_token: str | None = None
    """Registration token node agents present to enroll (required when api_keys are set)."""
    allowed_hosts: list[str] = []
    """Extra Host header values accepted besides loopback names and the bind address."""
    cors_origins: list[str] = []
    """Browser origins (`https://dash.example.org`) allowed to call the API cross-site, for web dashboards:
    CORS headers for them, and their mutating calls are not refused. Env form: comma-separated (default none)."""
    heartbeat_interval: float = Field(default=10.0, gt=0)
    """Seconds between agent heartbeats (default 10)."""
    heartbeat_timeout: float = Field(default=30.0, gt=0)
    """Seconds without a heartbeat before a worker is offline and its tasks requeued (default 30)."""
    heartbeat_check_interval: float = Field(default=10.0, gt=0)
    """Seconds between runs of the heartbeat checker (default 10)."""
    gpu_idle_threshold: float = Field(default=5.0, ge=0, le=100)
    """GPU utilisation (percent) below which a GPU counts as not busy (default 5)."""
    gpu_idle_after: float = Field(default=300.0, gt=0)
    """Seconds a GPU allocated to a task may stay below gpu_idle_threshold before it is flagged idle: a stuck data
    loader, CPU-bound work on a GPU slot (default 300)."""
    offline_worker_expiry: float = Field(default=259_200.0, ge=0)
    """Seconds after its last heartbeat an offline worker is deleted from the record (default 259200 = 3 days;
    0 keeps them). Its tasks and attempts keep its id."""
    retry_base_delay: float = Field(default=60.0, ge=0)
    """Base of the exponential retry backoff in seconds: base * 2**(retry-1) (default 60)."""
    retry_max_delay: float = Field(default=3600.0, ge=0)
    """Cap of the retry backoff in seconds (default 3600)."""
    task_timeout: int = Field(default=300, gt=0)
    """Default `timeout_s` of a task (default 300; also TASK_TIMEOUT)."""
    task_max_wait: int | None = Field(default=None, gt=0)
    """Default `max_wait_s` of a task: still pending this long after submission, it ends as timeout (default
    none: tasks wait as long as it takes; also TASK_MAX_WAIT_TIME)."""
    max_retries: int = Field(default=3, ge=0)
    """Default `max_retries` of a task (default 3; also TASK_MAX_RETRIES)."""
    max_worker_losses: int = Field(default=3, ge=1)
    """Attempts a task may lose to dead workers before it is failed (default 3)."""
    exclusive_tasks: bool = False
    """Tasks that do not say (`exclusive`) never run two attempts at once, even across a network partition: their
    agent stops them once cut off long enough for a requeue. Off (default), an agent that cannot reach any
    coordinator keeps running its tasks (up to its disconnect grace), so a coordinator restart loses no work."""
    stop_wait_max: float = Field(default=300.0, gt=0)
    """Longest a cancelled, requeued or timed-out task waits for its worker to confirm the old attempt's process
    gone before it may run again anyway (default 300 s; a worker that is lost releases it at once)."""
    leader_lease: float = Field(default=5.0, gt=0)
    """Seconds the leader's lease on the timers lasts unless renewed (every second): a killed leader is replaced
    within about this long; a stopped one at once (default 5)."""
    takeover_grace: float | None = Field(default=None, gt=0)
    """Seconds a new leader waits before declaring any worker dead, so every worker can report in after a
    restart or failover (default: heartbeat_timeout)."""
    max_pending_per_service: int = Field(default=10_000, ge=1)
    """Pending tasks a service may hold before submissions get 429 (default 10000)."""
    max_queue_shapes: int = Field(default=1000, ge=1)
    """Queues with tasks one group may hold (a queue per service and distinct labels and resources); a submission
    that would open one more gets 429 naming `resources`, while tasks for queues that hold tasks are always taken.
    Every claim reads each queue of its worker's groups (default 1000)."""
    service_limits: dict[str, int] = {}
    """Per-service cap on running tasks, e.g. {docking: 8}. Env form: `docking=8,admet=32`."""
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    """Largest request body in bytes, batches excepted (default 1 MB)."""
    max_batch_bytes: int = Field(default=8_000_000, gt=0)
    """Largest batch submission body in bytes (default 8 MB)."""
    max_batch_tasks: int = Field(default=1000, gt=0)
    """Most tasks in one batch request (default 1000)."""
    log_line_max_bytes: int = Field(default=4096, gt=0)
    """Longest kept log line; longer lines are cut (default 4096)."""
    log_max_lines_per_attempt: int = Field(default=20_000, gt=0)
    """Log lines kept per attempt; the oldest beyond this are dropped, the tail kept (default 20000)."""
    log_max_bytes_per_attempt: int = Field(default=16_000_000, gt=0)
    """Log bytes kept per attempt; the oldest lines beyond this are dropped, the tail kept (default 16 MB)."""
    lease_max_wait: float = Field(default=30.0, ge=0)
    """Longest a lease request long-polls for work, in seconds (default 30)."""
    reconcile_interval: float = Field(default=60.0, gt=0)
    """Seconds between rebuilds of the Redis index from PostgreSQL when drift is found (default 60)."""
    allow_shell_tasks: bool = True
    """Accept `shell` tasks at all (default true)."""
    shell_requires_operator: bool = False
    """Accept `shell` tasks only from operator keys (default false)."""
    minio_endpoint: str | None = None
    """MinIO / S3 server for task files, `host:port` or a URL (also MINIO_ENDPOINT); unset: a local directory."""
    minio_public_endpoint: str | None = None
    """The address clients reach MinIO at, for the download links the API hands out, when it differs from
    `minio_endpoint` (e.g. an internal name); `host:port` or a URL (default: minio_endpoint; also
    MINIO_PUBLIC_ENDPOINT)."""
    minio_region: str | None = None
    """The bucket's region (also MINIO_REGION); with a public endpoint, links are signed for it without asking
    the server (default `us-east-1`, MinIO's own default)."""
    minio_access_key: str | None = None
    """MinIO / S3 access key (also MINIO_ACCESS_KEY)."""
    minio_secret_key: str | None = None
    """MinIO / S3 secret key (also MINIO_SECRET_KEY)."""
    minio_bucket: str = Field(default="aidd", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    """Bucket of task files, created when missing (default `aidd`; also MINIO_BUCKET)."""
    minio_secure: bool = False
    """Use TLS to reach MinIO (default false; an https:// endpoint turns it on; also MINIO_SECURE)."""
    max_file_bytes: int = Field(default=100_000_000, gt=0)
    """Largest task file, uploaded input or output, in bytes (default 100 MB); beyond it 413."""
    presign_expiry_s: int = Field(default=86_400, ge=1, le=604_800)
    """How long presigned download URLs stay valid, in seconds (default 86400 = 24 h; at most 7 days)."""
    file_retention_days: float = Field(default=30, ge=0)
    """Files of tasks finished longer ago than this many days are deleted (hourly); 0 keeps them forever."""
    task_retention_days: float = Field(default=90, ge=0)
    """Finished tasks (succeeded, failed, timed out, cancelled) older than this many days are deleted with their
    attempts, log lines and files, by the leader in small batches (default 90); 0 keeps them forever."""
    migrate_on_start: bool = True
    """Bring the PostgreSQL schema to the newest revision at every start (default true). False: migrate as a
    deployment step (`aidd db upgrade`); a coordinator then refuses, with one line, a schema that is not the newest.
    An embedded PostgreSQL is always migrated at start (nothing else reaches it)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severe log record `aidd --serve` writes (default info; also `--log-level`)."""
    log_format: Literal["text", "json"] = "text"
    """`aidd --serve` logs text lines, or one JSON object a line for log collectors (default text; also
    `--log-format`). uvicorn's records take the same format."""
    access_log: bool = True
    """One record per HTTP request on logger `aidd.access`: method, path, status, duration and the request id that
    the response carries in `X-Request-ID` (default true); answered heartbeats at debug level."""

    @field_validator("state_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        return _parse_keys(value) if isinstance(value, str) else value

    @field_validator("service_limits", "allowed_hosts", "cors_origins", "embedded", mode="before")
    @classmethod
    def _parse_env_forms(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        items = [item.strip() for item in value.split(",") if item.strip()]
        if info.field_name != "service_limits":
            return items
        pairs = [item.partition("=") for item in items]
        return {key: limit for key, _, limit in pairs}

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def origin(self, key: str) -> str:
        """Where the value of `key` came from, as the operator wrote it: `REDIS_URL`, `AIDD_REDIS_URL`,
        `redis_url in aidd.yml`; the key itself when it was set in code or by a flag."""
        return self._origins.get(key, key)

    @property
    def migrates_at_start(self) -> bool:
        """Whether the coordinator brings the schema up to date itself (see `migrate_on_start`)."""
        return self.migrate_on_start or "postgres" in self.embedded

    @property
    def is_loopback(self) -> bool:
        """Whether the API binds only to this machine."""
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")


def _parse_keys(value: str) -> list[dict[str, str]]:
    """The env form of api_keys: comma-separated `key`, `role:key` or `name:role:key`."""
    return [_parse_key(i, item.strip()) for i, item in enumerate(value.split(","), 1) if item.strip()]


def _parse_key(index: int, item: str) -> dict[str, str]:
    parts = item.split(":")
    if len(parts) == 1:
        return {"name": f"key{index}", "key": parts[0]}
    if len(parts) == 2:
        return {"name": f"{parts[0]}{index}", "role": parts[0], "key": parts[1]}
    return {"name": parts[0], "role": parts[1], "key": ":".join(parts[2:])}


def _postgres_env_url(env: Mapping[str, str]) -> str | None:
    """Build a URL from the conventional POSTGRES_* variables, when any is set."""
    if not any(k in env for k in ("POSTGRES_HOST", "POSTGRES_DB", "POSTGRES_USER")):
        return None
    user = env.get("POSTGRES_USER", "postgres")
    password = env.get("POSTGRES_PASSWORD")
    auth = f"{user}:{password}" if password else user
    host = env.get("POSTGRES_HOST", "127.0.0.1")
    return f"postgresql://{auth}@{host}:{env.get('POSTGRES_PORT', '5432')}/{env.get('POSTGRES_DB', 'aidd')}"


def _redis_env_url(env: Mapping[str, str]) -> str | None:
    """Build a URL from REDIS_HOST / REDIS_PORT / REDIS_PASSWORD / REDIS_DB (the AIDD platform's and the LLM
    scheduler's names), when REDIS_HOST is set: a set host means an external Redis, not the embedded one."""
    if not env.get("REDIS_HOST"):
        return None
    password = env.get("REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{env['REDIS_HOST']}:{env.get('REDIS_PORT', '6379')}/{env.get('REDIS_DB', '0')}"


def _db_env_url(env: Mapping[str, str]) -> str | None:
    """Build a URL from the LLM scheduler's DB_HOST / DB_PORT / DB_USER / DB_PASSWORD / DB_NAME, when DB_HOST
    is set."""
    if not env.get("DB_HOST"):
        return None
    user, password = env.get("DB_USER", "postgres"), env.get("DB_PASSWORD")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    return f"postgresql://{auth}@{env['DB_HOST']}:{env.get('DB_PORT', '5432')}/{env.get('DB_NAME', 'aidd')}"


COMPAT_ENV = {"TASK_TIMEOUT": "task_timeout", "TASK_MAX_RETRIES": "max_retries", "TASK_MAX_WAIT_TIME": "task_max_wait"}
"""The AIFlow gateway's names for settings that mean the same here."""
IGNORED_ENV = {"MINIO_BUCKET_INPUTS": "inputs and outputs share one bucket here: set MINIO_BUCKET",
               "MINIO_BUCKET_OUTPUTS": "inputs and outputs share one bucket here: set MINIO_BUCKET"}
"""Older systems' variables with no meaning here, and what to use instead (each set one is warned about)."""


def _first_url(env: Mapping[str, str], *candidates: tuple[str, str | None]) -> tuple[str, str | None]:
    """The first (variable, URL) that has a URL, else (the first variable, None)."""
    return next(((name, url) for name, url in candidates if url), (candidates[0][0], None))


def _environment_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the environment gives, and the variable each came from."""
    conventional = {
        "redis_url": _first_url(env, ("REDIS_URL", env.get("REDIS_URL")), ("REDIS_HOST", _redis_env_url(env))),
        "database_url": _first_url(env, ("DATABASE_URL", env.get("DATABASE_URL")),
                                   ("POSTGRES_*", _postgres_env_url(env)), ("DB_HOST", _db_env_url(env))),
        **{key: (name, env.get(name)) for name, key in COMPAT_ENV.items()}}
    conventional.update({f"minio_{name}": (f"MINIO_{name.upper()}", env.get(f"MINIO_{name.upper()}"))
                         for name in MINIO_ENV})
    overrides = {key: value for key, (_, value) in conventional.items() if value}
    origins = {key: variable for key, (variable, value) in conventional.items() if value}
    for name in Settings.model_fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            overrides[name], origins[name] = value, ENV_PREFIX + name.upper()
    return overrides, origins


def _with_gateway_keys(keys: Any, env: Mapping[str, str]) -> Any:
    """The client keys plus AIFlow's (API_GATEWAY_API_KEYS, comma-separated): they submit and read, and see its
    status words (profile `aiflow`)."""
    gateway = [{"name": f"aiflow{i}", "role": "submit", "key": key.strip(), "profile": "aiflow"}
               for i, key in enumerate(env.get("API_GATEWAY_API_KEYS", "").split(","), 1) if key.strip()]
    if not gateway:
        return keys
    return [*(_parse_keys(keys) if isinstance(keys, str) else keys or []), *gateway]


def ignored_environment(env: Mapping[str, str]) -> list[str]:
    """One line for each older system's variable that is set here but means nothing (started commands log them)."""
    return [f"{name} is set but ignored: {why}" for name, why in IGNORED_ENV.items() if env.get(name)]


def default_config_path(env: Mapping[str, str]) -> Path | None:
    """The config file used when none is named: $AIDD_CONFIG, else ./aidd.yml if it exists."""
    if env.get("AIDD_CONFIG"):
        return Path(env["AIDD_CONFIG"])
    local = Path("aidd.yml")
    return local if local.is_file() else None


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Read the config file, then environment overrides, then explicit overrides (command-line flags).

    Raises:
        ConfigError: naming the first bad key, e.g. `AIDD_HEARTBEAT_TIMEOUT: Input should be a valid number`.
    """
    env = os.environ if env is None else env
    path = path or default_config_path(env)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values")
        values.update(loaded)
        origins.update({str(key): f"{key} in {path}" for key in loaded})
    from_env, env_origins = _environment_overrides(env)
    values.update(from_env)
    origins.update(env_origins)
    flags = {k: v for k, v in overrides.items() if v is not None}
    values.update(flags)
    if env.get("API_GATEWAY_API_KEYS"):
        values["api_keys"] = _with_gateway_keys(values.get("api_keys"), env)
        origins.setdefault("api_keys", "API_GATEWAY_API_KEYS")
    origins = {key: origin for key, origin in origins.items() if key not in flags}
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "config"
        shown = ENV_PREFIX + key.upper() if key in from_env and key not in flags else key
        where = ".".join(str(p) for p in error["loc"][1:])
        detail = f"{error['msg']}" + (f" (at {where})" if where else "")
        if error["type"] == "extra_forbidden":
            detail = "unknown key"
        elif key not in SECRET_KEYS:
            detail += f", got {error.get('input')!r}"
        raise ConfigError(f"{shown}: {detail}") from None
    settings._origins = origins
    for line in ignored_environment(env):
        log.warning("%s", line)
    return settings
