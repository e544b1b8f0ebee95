"""How the agent and the coordinator write their own log records to stderr: text lines, or one JSON object a line.

One handler on the root logger formats every record the process makes, the libraries' too (uvicorn's server and
error records reach it, so a coordinator's log has one format). Standard library only: the agent ships alone,
and the coordinator uses this module as it is.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                                   "color_message"}
"""Attributes every LogRecord has (and uvicorn's terminal-coloured copy of its message); anything else on a record
came from `extra=` and goes into the JSON object."""


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...}`: the time in UTC (ISO 8601), the `extra=` fields beside the
    message, and the traceback of an exception as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str, log_format: str, text_format: str) -> None:
    """Send every record at `level` or above to stderr in `log_format` (`text` uses `text_format`).

    Loggers that uvicorn or an earlier call gave handlers of their own hand their records to the root instead,
    so nothing is written twice or in another format.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for noisy in ("httpx", "httpcore"):  # a line per request at info: the agent makes several a second
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
