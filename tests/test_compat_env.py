"""The older systems' environment names are read where they mean something here, and a set one that means
nothing is one warning line naming what to use instead."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from coordinator.config import ConfigError, Settings, load_settings
from nodeagent.cli import UsageError, build_parser, config_from


def load(tmp_path: Path, env: dict[str, str]) -> Settings:
    config = tmp_path / "aidd.yml"
    config.write_text("")
    return load_settings(config, env=env)


def test_redis_host_means_an_external_redis(tmp_path: Path) -> None:
    """REDIS_HOST/PORT/PASSWORD/DB (the AIDD platform's, the LLM scheduler's) make the Redis URL; the embedded
    redis-server no longer starts for it, and a setup with no database URL is refused naming REDIS_HOST."""
    env = {"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_PASSWORD": "p@ss", "REDIS_DB": "3",
           "DB_HOST": "db", "DB_PORT": "5433", "DB_USER": "llm", "DB_PASSWORD": "pw", "DB_NAME": "sched"}
    settings = load(tmp_path, env)
    assert settings.redis_url == "redis://:p%40ss@cache:6380/3"
    assert settings.database_url == "postgresql://llm:pw@db:5433/sched"
    assert settings.origin("redis_url") == "REDIS_HOST"
    assert load(tmp_path, {"REDIS_URL": "redis://u/0", "REDIS_HOST": "h"}).redis_url == "redis://u/0"


def test_aiflow_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """TASK_TIMEOUT and TASK_MAX_RETRIES set the defaults; API_GATEWAY_API_KEYS are submit keys of profile
    aiflow, added to AIDD_API_KEYS; MINIO_BUCKET_INPUTS is one warning line."""
    env = {"TASK_TIMEOUT": "90", "TASK_MAX_RETRIES": "1", "API_GATEWAY_API_KEYS": "gw-key-0001, gw-key-0002",
           "AIDD_API_KEYS": "ops:operator:ops-key-001", "MINIO_BUCKET_INPUTS": "inputs"}
    with caplog.at_level(logging.WARNING, logger="coordinator.config"):
        settings = load(tmp_path, env)
    assert (settings.task_timeout, settings.max_retries) == (90, 1)
    keys = [(k.name, k.role, k.profile) for k in settings.api_keys]
    assert keys == [("ops", "operator", "aidd"), ("aiflow1", "submit", "aiflow"), ("aiflow2", "submit", "aiflow")]
    assert caplog.messages == ["MINIO_BUCKET_INPUTS is set but ignored: inputs and outputs share one bucket here: "
                               "set MINIO_BUCKET"]
    with pytest.raises(ConfigError, match="TASK_TIMEOUT"):
        load(tmp_path, {"TASK_TIMEOUT": "soon"})


def test_the_agent_reads_master_url() -> None:
    """The Workers API's node agents were configured with MASTER_URL; AIDD_URL wins when both are set."""
    args = build_parser().parse_args([])
    assert config_from(args, {"MASTER_URL": "http://master:8000"})[0].urls == ["http://master:8000"]
    both = {"MASTER_URL": "http://master:8000", "AIDD_URL": "http://aidd:8333"}
    assert config_from(args, both)[0].urls == ["http://aidd:8333"]
    with pytest.raises(UsageError, match=r"^MASTER_URL: must start with http"):
        config_from(args, {"MASTER_URL": "master:8000"})
