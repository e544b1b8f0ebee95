"""Coming from the AIDD platform: what its clients and docs rely on beyond the bodies the SPEC lists (those are
replayed in test_api_input.test_legacy_bodies_work_unchanged): the register answer's `worker_id`, its docs
pages, and its Redis variables meaning an external Redis."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from coordinator.config import ConfigError, load_settings
from coordinator.runtime import embedded_parts


def test_register_answer_names_worker_id_and_the_docs_are_there(client: httpx.Client) -> None:
    """Its agent reads `worker_id` from the register answer and heartbeats under it; its README links /docs."""
    registered = client.post("/api/v1/workers/register", json={"hostname": "gpu-07", "service": "admet"}).json()
    worker_id, token = registered["worker_id"], registered["token"]
    assert worker_id == registered["id"]
    beat = client.post(f"/api/v1/workers/{worker_id}/heartbeat", json={"used_cpu": 1},
                       headers={"Authorization": f"Bearer {token}"})
    assert beat.status_code == 200 and beat.json()["status"] == "online"
    assert "swagger-ui" in client.get("/docs").text and "redoc" in client.get("/redoc").text


def test_redis_host_is_an_external_redis(tmp_path: Path) -> None:
    """A set REDIS_HOST means an external Redis: no embedded redis-server for it; without a database URL the
    half-external setup is refused naming REDIS_HOST (it was silently ignored before)."""
    config = tmp_path / "aidd.yml"
    config.write_text("")
    both = load_settings(config, env={"REDIS_HOST": "cache", "POSTGRES_HOST": "db"})
    assert embedded_parts(both) == set()
    half = load_settings(config, env={"REDIS_HOST": "cache"})
    with pytest.raises(ConfigError, match=r"^REDIS_HOST is set but no database is"):
        embedded_parts(half)
