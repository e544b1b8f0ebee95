"""The AIDD node agent: registers a compute host, heartbeats its telemetry, leases tasks and runs them.

It ships alone: only httpx, psutil, orjson and (at run time, if present) pynvml; nothing from `coordinator`.
"""

from __future__ import annotations

__version__ = "0.1.0"
