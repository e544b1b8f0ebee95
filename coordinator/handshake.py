"""The options of every Redis client aidd opens, apart from the rest of the start-up checks: the embedded stores'
start needs them before anything else, and importing them must not import SQLAlchemy (`preflight` does)."""

from __future__ import annotations

import contextlib
from typing import Any


def _quiet_handshake() -> dict[str, Any]:
    options: dict[str, Any] = {"lib_name": None, "lib_version": None}
    with contextlib.suppress(ImportError):  # redis-py 7+: the same, said the newer way
        from redis.driver_info import DriverInfo

        options = {"driver_info": DriverInfo(name=None, lib_version=None)}
    with contextlib.suppress(ImportError):  # redis-py 7+ on RESP3: CLIENT MAINT_NOTIFICATIONS, unknown before 8
        from redis.maint_notifications import MaintNotificationsConfig

        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return options


NO_HANDSHAKE = _quiet_handshake()
"""Options of every Redis client the coordinator opens. On each new connection redis-py announces itself
(`CLIENT SETINFO`, unknown before Redis 7.2) and, on RESP3, asks for maintenance notifications (unknown before
Redis 8): each answered ERR, counted in `INFO errorstats`, enough to trip an error-rate alert. We ask for neither."""
