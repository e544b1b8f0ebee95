"""An idle node agent's footprint: RSS and CPU share over a window, next to a bare Python interpreter.

    python -m bench.agent_idle [--url URL] [--seconds 20] [--heartbeat-interval S]

Without --url it starts the embedded Redis + PostgreSQL and a coordinator with production timers
(heartbeat 10 s, 30 s long-polls), so the agent does exactly what it does idle in the field. The
target (issue 3) is under 60 MB RSS and under 1 % of one core.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def coordinator(url: str | None, state: Path, heartbeat_interval: float) -> Iterator[str]:
    """The URL of a running coordinator: the one given, or an embedded one started here."""
    if url:
        yield url
        return
    from coordinator.config import Settings
    from coordinator.db import create_engine, migrate
    from coordinator.embedded import start_embedded
    from coordinator.server import BackgroundServer

    servers = start_embedded(state)
    try:
        import asyncio

        async def prepare() -> None:
            engine = create_engine(servers.database_url)
            await migrate(engine)
            await engine.dispose()
        asyncio.run(prepare())
        settings = Settings(state_dir=state, redis_url=servers.redis_url, database_url=servers.database_url,
                            port=0, heartbeat_interval=heartbeat_interval, key_prefix="benchidle")
        server = BackgroundServer(settings, timers=True).start()
        try:
            yield server.url
        finally:
            server.stop()
    finally:
        servers.stop()


def footprint(proc: psutil.Process, seconds: float) -> tuple[float, float, float]:
    """(RSS MB at the end, peak RSS MB sampled each second, CPU % of one core over the window)."""
    start_cpu = sum(proc.cpu_times()[:2])
    start = time.monotonic()
    peak = 0.0
    while time.monotonic() - start < seconds:
        peak = max(peak, proc.memory_info().rss / 2**20)
        time.sleep(1.0)
    cpu = sum(proc.cpu_times()[:2]) - start_cpu
    elapsed = time.monotonic() - start
    return proc.memory_info().rss / 2**20, peak, 100 * cpu / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running coordinator (default: start an embedded one)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--heartbeat-interval", type=float, default=10.0)
    args = parser.parse_args()
    with (tempfile.TemporaryDirectory() as tmp,
          coordinator(args.url, Path(tmp) / "state", args.heartbeat_interval) as url):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        agent = subprocess.Popen([sys.executable, "-m", "nodeagent.cli", "--url", url, "--hostname", "bench-idle",
                                  "--work-dir", str(Path(tmp) / "work"), "--log-level", "warning"], env=env, cwd=ROOT)
        bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        try:
            with httpx.Client(base_url=url, timeout=10) as http:
                deadline = time.monotonic() + 30
                while not any(w["hostname"] == "bench-idle" for w in http.get("/api/v1/workers").json()["items"]):
                    if time.monotonic() > deadline or agent.poll() is not None:
                        raise SystemExit("the agent did not register")
                    time.sleep(0.2)
            time.sleep(2.0)  # past start-up
            rss, peak, cpu = footprint(psutil.Process(agent.pid), args.seconds)
            bare_rss = psutil.Process(bare.pid).memory_info().rss / 2**20
        finally:
            agent.terminate()
            bare.kill()
            agent.wait(30)
            bare.wait()
    print(f"idle agent over {args.seconds:.0f}s (heartbeat {args.heartbeat_interval:g}s, coordinator {url}):")
    print(f"  RSS {rss:.1f} MB (peak {peak:.1f} MB; bare python {bare_rss:.1f} MB, ratio {rss / bare_rss:.1f}x)"
          f"  target < 60 MB: {'ok' if peak < 60 else 'OVER'}")
    print(f"  CPU {cpu:.2f} % of one core  target < 1 %: {'ok' if cpu < 1 else 'OVER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
