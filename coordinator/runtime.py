"""Start-up shared by `aidd`, `aidd --serve` and tests: embedded servers when no Redis/PostgreSQL is configured."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from coordinator.config import ConfigError, Settings
from coordinator.embedded import start_embedded

log = logging.getLogger(__name__)


def check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond loopback without API keys and an agent token."""
    if settings.is_loopback:
        return
    if not settings.api_keys:
        raise ConfigError(f"host: refusing to serve on {settings.host} without api_keys (set AIDD_API_KEYS)")
    if not settings.agent_token:
        raise ConfigError(f"host: refusing to serve on {settings.host} without agent_token (set AIDD_AGENT_TOKEN)")


@contextlib.contextmanager
def stores(settings: Settings) -> Iterator[Settings]:
    """Settings with Redis and PostgreSQL URLs: as configured, or from embedded servers started (and stopped) here.

    Must run on the main thread: the embedded servers die with the thread that started them.
    """
    if settings.redis_url and settings.database_url:
        yield settings
        return
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    servers = start_embedded(settings.state_dir)
    log.info("embedded Redis and PostgreSQL running; state in %s", settings.state_dir)
    try:
        yield settings.model_copy(update={"redis_url": settings.redis_url or servers.redis_url,
                                          "database_url": settings.database_url or servers.database_url})
    finally:
        servers.stop()
