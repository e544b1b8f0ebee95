"""Peak memory of the coordinator process while it receives a 100 MB file over HTTP, against its idle size.

    .venv/bin/python -m bench.upload_memory [--mb 100] [--backend local|minio|both]

Starts embedded Redis + PostgreSQL in a temporary state dir and `aidd --serve` in its own process on
them (for `minio`, also moto's S3 server on loopback), warms it up with a small submission, then
measures its resident memory (RSS) idle and at its peak while receiving: a multipart task submission
with one file of --mb megabytes, and the agent's streamed PUT of an output file of the same size.
The peak is the kernel's high-water mark (VmHWM, reset through /proc/PID/clear_refs before each
upload) where Linux offers it, else sampled every 2 ms. Target: under 64 MB above idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.queue_throughput import free_port, wait_healthy
from coordinator.embedded import start_embedded

MB = 1_000_000
TARGET_MB = 64


class PeakRss:
    """The peak RSS of a process during a `with` block: the kernel's VmHWM when resettable, else sampled."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.pid = pid
        self.peak = 0

    def _hwm(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _reset_hwm(self) -> bool:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @contextmanager
    def measure(self) -> Iterator[None]:
        kernel = self._reset_hwm()
        done = threading.Event()
        sampled = [self.process.memory_info().rss]

        def sample() -> None:
            while not done.wait(0.002):
                sampled[0] = max(sampled[0], self.process.memory_info().rss)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            hwm = self._hwm() if kernel else None
            self.peak = max(sampled[0], hwm or 0)


def idle_rss(pid: int, seconds: float = 2.0) -> int:
    """The process's RSS at rest: the largest of a few samples over `seconds`."""
    process, largest = psutil.Process(pid), 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        largest = max(largest, process.memory_info().rss)
        time.sleep(0.1)
    return largest


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's stand-alone S3 server on a free loopback port, stopped by pid."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def run_uploads(url: str, pid: int, payload: Path, size: int) -> dict[str, float]:
    """Idle RSS, then the peak during a multipart submission and during an agent's output PUT."""
    with httpx.Client(base_url=url, timeout=600) as http:
        warm = http.post("/api/v1/tasks", data={"task": json.dumps({"service": "warm", "task_type": "noop"})},
                         files=[("files", ("warm.bin", b"x" * 4096))])
        warm.raise_for_status()
        reg = http.post("/api/v1/workers/register", json={"hostname": "bench", "cpu_cores": 4}).json()
        headers = {"Authorization": f"Bearer {reg['token']}"}
        leased = http.post(f"/api/v1/workers/{reg['id']}/lease", json={"max_tasks": 1}, headers=headers).json()
        attempt = leased["tasks"][0]["attempt_id"]
        http.put(f"/api/v1/workers/{reg['id']}/attempts/{attempt}/outputs/warm.bin", content=b"x" * 4096,
                 headers=headers).raise_for_status()
        idle = idle_rss(pid)
        meter = PeakRss(pid)
        task = json.dumps({"service": "bench", "task_type": "noop"})
        with meter.measure(), payload.open("rb") as data:
            start = time.perf_counter()
            response = http.post("/api/v1/tasks", data={"task": task}, files=[("files", ("big.bin", data))])
            submit_s = time.perf_counter() - start
        response.raise_for_status()
        submit_peak = meter.peak
        with meter.measure(), payload.open("rb") as data:
            start = time.perf_counter()
            put = http.put(f"/api/v1/workers/{reg['id']}/attempts/{attempt}/outputs/big.bin", content=data,
                           headers={**headers, "content-length": str(size)})
            put_s = time.perf_counter() - start
        put.raise_for_status()
        assert put.json()["size"] == size, put.text
    return {"idle_mb": idle / MB, "submit_peak_mb": submit_peak / MB, "submit_delta_mb": (submit_peak - idle) / MB,
            "submit_mb_per_s": size / MB / submit_s, "put_peak_mb": meter.peak / MB,
            "put_delta_mb": (meter.peak - idle) / MB, "put_mb_per_s": size / MB / put_s}


def measure_backend(backend: str, redis_url: str, database_url: str, payload: Path, size: int) -> dict[str, Any]:
    """Start a coordinator with this backend and measure it."""
    with tempfile.TemporaryDirectory(prefix="aidd-bench-state-") as state, \
            (s3_server() if backend == "minio" else _nothing()) as endpoint:
        port = free_port()
        env = {**os.environ, "AIDD_REDIS_URL": redis_url, "AIDD_DATABASE_URL": database_url,
               "AIDD_MAX_FILE_BYTES": str(size), "AIDD_KEY_PREFIX": f"bench{backend}"}
        if endpoint:
            env.update({"AIDD_MINIO_ENDPOINT": endpoint, "AIDD_MINIO_ACCESS_KEY": "bench",
                        "AIDD_MINIO_SECRET_KEY": "bench-secret"})
        proc = subprocess.Popen([sys.executable, "-m", "aiddclient.cli", "--serve", "--port", str(port),
                                 "--state-dir", state], env=env, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            return {"backend": backend, **run_uploads(url, proc.pid, payload, size)}
        finally:
            proc.terminate()
            proc.wait(30)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="size of the uploaded file in MB (10^6 bytes)")
    parser.add_argument("--backend", choices=["local", "minio", "both"], default="both")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    size = args.mb * MB
    backends = ["local", "minio"] if args.backend == "both" else [args.backend]
    results = []
    with tempfile.TemporaryDirectory(prefix="aidd-bench-") as state:
        payload = Path(state) / "payload.bin"
        with payload.open("wb") as out:
            for _ in range(args.mb):
                out.write(os.urandom(MB))
        servers = start_embedded(Path(state) / "stores")
        try:
            for backend in backends:
                results.append(measure_backend(backend, servers.redis_url, servers.database_url, payload, size))
        finally:
            servers.stop()
    print(f"coordinator RSS while receiving one {args.mb} MB file over HTTP (target: < {TARGET_MB} MB above idle)")
    for r in results:
        print(f"  {r['backend']:<6} idle {r['idle_mb']:6.1f} MB | multipart submit: peak {r['submit_peak_mb']:6.1f} MB "
              f"(+{r['submit_delta_mb']:5.1f} MB, {r['submit_mb_per_s']:5.0f} MB/s) | agent PUT: peak "
              f"{r['put_peak_mb']:6.1f} MB (+{r['put_delta_mb']:5.1f} MB, {r['put_mb_per_s']:5.0f} MB/s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
