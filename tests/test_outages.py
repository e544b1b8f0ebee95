"""Outage or bug: a store away is logged as one line and waited out; a bug is logged with its traceback,
counted in `aidd_internal_errors_total`, and never costs the leadership."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
import uuid
from collections.abc import Callable
from typing import Any

import pynvml
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from coordinator.config import Settings
from coordinator.metrics import Metrics
from coordinator.service import Coordinator
from coordinator.wakeup import Waker
from nodeagent.gpu import NvmlProbe
from tests.helpers import started
from tests.support.ports import free_port
from tests.support.waiting import await_until

pytestmark = pytest.mark.anyio


def bugs(metrics: Metrics, where: str) -> float:
    """`aidd_internal_errors_total{where=...}` of one coordinator."""
    return metrics.registry.get_sample_value("aidd_internal_errors_total", {"where": where}) or 0.0


def logged(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    """The records at `level` whose message holds `text`."""
    return [r for r in caplog.records if r.levelno == level and text in r.getMessage()]


async def test_a_bug_in_a_tick_is_logged_counted_and_the_leader_stays(settings: Settings, clean_db: None,
                                                                     redis: SyncRedis,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A TypeError in one timer job: an ERROR with its traceback, one count, and the lease still this one's."""
    async with started(settings) as coordinator:
        timers = coordinator.timers
        assert await timers.guarded_tick() and timers.leader_since is not None

        async def broken() -> int:
            raise TypeError("unsupported operand")
        timers._last_check = 0.0  # the check interval's jobs are due in the next tick
        real, timers.workers.expire_offline = timers.workers.expire_offline, broken  # type: ignore[method-assign]
        assert not await timers.guarded_tick()
        [record] = logged(caplog, logging.ERROR, "timers: unexpected error")
        assert record.exc_info is not None and record.exc_info[0] is TypeError
        assert bugs(coordinator.core.metrics, "timers") == 1
        assert timers.leader_since is not None
        assert redis.get(coordinator.core.keys.leader) == timers.instance.encode()
        timers.workers.expire_offline = real  # type: ignore[method-assign]
        assert await timers.guarded_tick() and timers.leader_since is not None  # no lease period sat out


async def test_a_store_outage_in_a_tick_is_one_warning_and_hands_over(settings: Settings, clean_db: None,
                                                                      redis: SyncRedis,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Redis refusing a command (a key of the index holds a string) is an outage: one WARNING line without a
    traceback, no count, and the lease given up."""
    async with started(settings) as coordinator:
        assert await coordinator.timers.guarded_tick()
        redis.set(coordinator.core.keys.delayed, "not a sorted set")
        assert not await coordinator.timers.guarded_tick()
        [record] = logged(caplog, logging.WARNING, "timers: ResponseError")
        assert record.exc_info is None
        assert bugs(coordinator.core.metrics, "timers") == 0
        assert coordinator.timers.leader_since is None and redis.get(coordinator.core.keys.leader) is None


async def test_a_bug_in_the_wakeup_listener_is_counted_and_it_listens_on(coordinator: Coordinator,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The first wake-up message meets a bug: logged with its traceback and counted; the listener subscribes
    again and later messages wake the waiters."""
    waker, metrics = coordinator.core.waker, coordinator.core.metrics
    real_fire, fired = waker.fire, []

    def fire_broken_once() -> None:
        fired.append(None)
        if len(fired) == 1:
            raise KeyError("wakeup")
        real_fire()
    waker.fire = fire_broken_once  # type: ignore[method-assign]

    async def woken_after_publishing() -> bool:
        waiting = asyncio.ensure_future(waker.wait(1.0))
        await asyncio.sleep(0.05)
        await coordinator.core.redis.publish(coordinator.core.keys.wakeup, b"another coordinator's wake-up")
        await waiting
        return len(fired) > 2  # the bug, the listener's own fire on resubscribing, then a message's

    await await_until(woken_after_publishing, what="a wake-up after the bug")
    [record] = logged(caplog, logging.ERROR, "wakeup: unexpected error")
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert bugs(metrics, "wakeup") == 1


async def test_redis_away_from_the_wakeup_listener_is_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    """A listener whose Redis refuses connections logs one WARNING per retry, counts nothing, and wakes the
    waiters so leases fall back to asking again."""
    metrics = Metrics()
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}")
    waker = Waker(redis, "nowhere", metrics)
    waker.start()
    try:
        assert not await waker.wait(5)  # woken by the lost channel (False: not for a worker in particular)
        assert logged(caplog, logging.WARNING, "wakeup channel lost")
        assert bugs(metrics, "wakeup") == 0
    finally:
        await waker.stop()
        await redis.aclose()


async def test_a_bug_in_the_heartbeat_writer_is_counted(coordinator: Coordinator,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Telemetry that is not UTF-8 cannot be written: a bug (logged with its traceback, counted), not a
    PostgreSQL outage retried for ever."""
    beats = coordinator.workers.beats
    beats.record(uuid.uuid4(), b"\xff not utf-8")
    await beats.flush()
    [record] = logged(caplog, logging.ERROR, "heartbeats: unexpected error")
    assert record.exc_info is not None and record.exc_info[0] is UnicodeDecodeError
    assert bugs(coordinator.core.metrics, "heartbeats") == 1
    assert not logged(caplog, logging.WARNING, "could not write heartbeat telemetry")


def fake_nvml(**overrides: Callable[..., Any]) -> types.ModuleType:
    """The fake NVML layer: one GPU, whose calls raise the real pynvml's NVMLError types where a device would."""
    def not_supported(*_: Any) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    fake = types.ModuleType("pynvml")
    calls: dict[str, Any] = {
        "NVMLError": pynvml.NVMLError, "nvmlInit": lambda: None, "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda i: f"gpu{i}", "nvmlDeviceGetName": lambda _: "Fake GPU",
        "nvmlDeviceGetUUID": lambda _: "GPU-fake", "nvmlDeviceGetComputeRunningProcesses": lambda _: [],
        "nvmlDeviceGetMemoryInfo": lambda _: types.SimpleNamespace(total=16 * 1024**3, used=1024**3),
        "nvmlDeviceGetUtilizationRates": lambda _: types.SimpleNamespace(gpu=40),
        "nvmlDeviceGetTemperature": not_supported, "nvmlDeviceGetPowerUsage": not_supported, **overrides}
    for name, value in calls.items():
        setattr(fake, name, value)
    return fake


def test_nvml_errors_are_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """What NVML raises (not supported here) is a reading the device does not give."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    [usage] = NvmlProbe().usage()
    assert usage["utilization"] == 40 and usage["memory_total_gb"] == 16
    assert usage.get("temperature") is None and usage.get("power_w") is None


def test_a_bug_under_the_nvml_probe_surfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything NVML does not raise (here a TypeError) is a bug: it reaches the caller, not "no reading"."""
    def broken(*_: Any) -> Any:
        raise TypeError("bad argument")
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(nvmlDeviceGetPowerUsage=broken))
    with pytest.raises(TypeError, match="bad argument"):
        NvmlProbe().usage()
