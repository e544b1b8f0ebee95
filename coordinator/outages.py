"""Outage or bug: the errors of the stores and the network, told apart from everything else.

An outage (Redis or PostgreSQL away, a connection cut, a timeout) is the normal weather of a cluster: the
background jobs log it as one line and try again. Anything else is a bug in this code: it is logged with its
traceback and counted in `aidd_internal_errors_total`, and it never costs a coordinator its leadership.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from coordinator.metrics import Metrics

OUTAGES: tuple[type[Exception], ...] = (RedisError, DBAPIError, PoolTimeout, OSError)
"""What a store or the network raises when it is away. DBAPIError, not only its OperationalError: asyncpg's
server shutdown, lock timeout and "too many clients" arrive as plain DBAPIError. OSError covers refused
connections and TimeoutError (asyncio's too)."""


def log_bug(log: logging.Logger, metrics: Metrics, where: str) -> None:
    """Log the exception being handled, with its traceback, as a bug in `where`, and count it there."""
    log.exception("%s: unexpected error (a bug, not an outage)", where)
    metrics.internal_errors.labels(where).inc()
