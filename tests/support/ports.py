"""Loopback ports for servers the tests start."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000


def _ephemeral_start() -> int:
    """Where the kernel's ephemeral ports begin (Linux's default 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP port that is free now (closed again: a refused connection until something binds it).

    Chosen below the ephemeral range: a port the kernel hands out for `bind(("", 0))` it may hand out again at once,
    to the embedded Redis or PostgreSQL started next or as the local end of an outgoing connection, and the server
    meant for it then finds it taken (the console moves to another port: a test waited on the wrong one). Below the
    range only another test's choice can collide, and the choice is random."""
    top = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(LOWEST, top) if top > LOWEST else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free loopback port below the ephemeral range")
