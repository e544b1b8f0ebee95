"""Prometheus metrics of one coordinator process (`GET /metrics`).

Two kinds, kept apart because several coordinators share one cluster:

- **Events of this process** — counters and histograms (`aidd_tasks_submitted_total`, request latency, queue
  wait, run time) count what this process did, as Prometheus expects of counters: `sum(rate(...))` over the
  instances gives the cluster's rate.
- **The cluster's state** — pending, running, workers, slots, GPUs — is exported by the leader alone, from a
  snapshot its timers refresh every `SNAPSHOT_PERIOD` seconds (`stats.read_cluster`, which costs
  O(active tasks + workers), never a scan of the task table). Other coordinators export these families
  without samples, so `sum(aidd_tasks_pending)` over every instance counts each task once, and a scrape costs
  no query at all.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

GIB = 1024**3
SNAPSHOT_PERIOD = 5.0
"""Seconds between refreshes of the cluster snapshot by the leader's timers."""
LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0)
"""Request durations: a few milliseconds to a long-polling lease (up to `lease_max_wait`, 30 s). Each bucket is a
series per route and method, and a scrape's cost grows with the series: few buckets, and no status label here."""
TASK_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
"""Queue waits and run times: a tenth of a second to a day."""


@dataclass(frozen=True)
class GpuReading:
    """One GPU's last heartbeat reading, named by its host and index (stable across agent restarts)."""

    hostname: str
    index: int
    utilization_ratio: float
    memory_used_bytes: float
    memory_total_bytes: float


@dataclass
class ClusterSnapshot:
    """The cluster's state as the leader last read it; what the cluster gauges export."""

    taken_at: float = field(default_factory=time.time)
    pending: dict[str, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    oldest_pending_at: dict[str, float] = field(default_factory=dict)
    """Per service, when its oldest pending task was submitted (epoch seconds)."""
    workers: dict[str, int] = field(default_factory=dict)
    slots: int = 0
    slots_used: int = 0
    gpus: int = 0
    gpus_allocated: int = 0
    gpus_busy: int = 0
    gpus_idle: int = 0
    gpu_readings: list[GpuReading] = field(default_factory=list)


class ClusterCollector(Collector):
    """Yields the cluster gauges from the snapshot while this process leads (and no samples otherwise)."""

    def __init__(self) -> None:
        self.snapshot: ClusterSnapshot | None = None
        self.services: set[str] = set()
        """Every service seen since start: one that empties shows 0 instead of vanishing."""

    def publish(self, snapshot: ClusterSnapshot | None) -> None:
        """Export `snapshot` from now on (None: this process no longer leads)."""
        if snapshot is not None:
            self.services |= set(snapshot.pending) | set(snapshot.running)
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        families = {
            "pending": GaugeMetricFamily("aidd_tasks_pending", "Pending tasks (queued or backing off)",
                                         labels=["service"]),
            "running": GaugeMetricFamily("aidd_tasks_running", "Running tasks", labels=["service"]),
            "oldest": GaugeMetricFamily("aidd_oldest_pending_task_age_seconds",
                                        "Age of the oldest pending task", labels=["service"]),
            "workers": GaugeMetricFamily("aidd_workers", "Workers by status", labels=["status"]),
            "slots": GaugeMetricFamily("aidd_slots", "Task slots of the workers that are not offline"),
            "slots_used": GaugeMetricFamily("aidd_slots_used", "Task slots in use (running tasks)"),
            "gpus": GaugeMetricFamily("aidd_gpus", "GPUs of the workers that are not offline"),
            "allocated": GaugeMetricFamily("aidd_gpus_allocated", "GPUs given to at least one running task"),
            "busy": GaugeMetricFamily("aidd_gpus_busy", "GPUs at or above gpu_idle_threshold utilisation"),
            "idle": GaugeMetricFamily("aidd_gpus_idle", "GPUs allocated to a task but below gpu_idle_threshold "
                                                        "for gpu_idle_after seconds or more"),
            "util": GaugeMetricFamily("aidd_gpu_utilization_ratio", "GPU utilisation (0-1) at the last heartbeat",
                                      labels=["hostname", "gpu"]),
            "mem": GaugeMetricFamily("aidd_gpu_memory_used_bytes", "GPU memory in use at the last heartbeat",
                                     labels=["hostname", "gpu"]),
            "mem_total": GaugeMetricFamily("aidd_gpu_memory_total_bytes", "GPU memory", labels=["hostname", "gpu"]),
            "age": GaugeMetricFamily("aidd_cluster_snapshot_age_seconds",
                                     "Seconds since the leader last read the cluster state"),
        }
        if snap is not None:
            now = time.time()
            for service in sorted(self.services):
                families["pending"].add_metric([service], snap.pending.get(service, 0))
                families["running"].add_metric([service], snap.running.get(service, 0))
                oldest = snap.oldest_pending_at.get(service)
                families["oldest"].add_metric([service], max(0.0, now - oldest) if oldest is not None else 0.0)
            for status, count in sorted(snap.workers.items()):
                families["workers"].add_metric([status], count)
            families["slots"].add_metric([], snap.slots)
            families["slots_used"].add_metric([], snap.slots_used)
            families["gpus"].add_metric([], snap.gpus)
            families["allocated"].add_metric([], snap.gpus_allocated)
            families["busy"].add_metric([], snap.gpus_busy)
            families["idle"].add_metric([], snap.gpus_idle)
            for gpu in snap.gpu_readings:
                labels = [gpu.hostname, str(gpu.index)]
                families["util"].add_metric(labels, gpu.utilization_ratio)
                families["mem"].add_metric(labels, gpu.memory_used_bytes)
                families["mem_total"].add_metric(labels, gpu.memory_total_bytes)
            families["age"].add_metric([], max(0.0, now - snap.taken_at))
        yield from families.values()


def gpu_readings(workers: list[dict[str, Any]]) -> list[GpuReading]:
    """The GPU readings of the workers that are not offline, one per hostname and index: when a host's agent
    restarted and both of its records are still online, the one heard from last wins."""
    newest: dict[tuple[str, int], tuple[float, GpuReading]] = {}
    for w in workers:
        if w["status"] == "offline":
            continue
        age = float(w.get("heartbeat_age_s", float("inf")))
        totals = {int(g.get("index", -1)): float(g.get("memory_gb", 0)) for g in w.get("gpus", [])}
        for g in (w.get("metrics") or {}).get("gpus", []):
            index = int(g.get("index", 0))
            memory_total = float(g.get("memory_total_gb") or totals.get(index, 0.0))
            reading = GpuReading(w["hostname"], index, float(g.get("utilization", 0)) / 100,
                                 float(g.get("memory_used_gb", 0)) * GIB, memory_total * GIB)
            key = (w["hostname"], index)
            if key not in newest or age < newest[key][0]:
                newest[key] = (age, reading)
    return [reading for _, reading in sorted(newest.values(), key=lambda r: (r[1].hostname, r[1].index))]


class Tally:
    """A batch's values (run times, waits) grouped by service, for metrics labelled by service: each label set is
    looked up once a batch instead of once a task (a look-up costs about 2 µs, and two counters and two histograms
    a task took a tenth of the coordinator's CPU in a drain)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add(self, service: str, value: float = 0.0) -> None:
        """One task of `service`, with its value (for `observe`)."""
        self.values.setdefault(service, []).append(value)

    def count(self, counter: Counter, *labels: str) -> None:
        """Add each service's number of tasks to `counter`, labelled by the service, then `labels`."""
        for service, values in self.values.items():
            counter.labels(service, *labels).inc(len(values))

    def observe(self, histogram: Histogram, *labels: str) -> None:
        """Observe each task's value in `histogram`, labelled by its service, then `labels`."""
        for service, values in self.values.items():
            child = histogram.labels(service, *labels)
            for value in values:
                child.observe(value)


class Series:
    """A labelled metric's series, each looked up once: `labels()` checks its values and takes a lock (~2 µs), which
    per HTTP request was a few per cent of a heartbeat's CPU at fleet rates."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self.metric = metric
        self._series: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        """The series of these label values."""
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = self.metric.labels(*labels)
        return series


class Metrics:
    """The metrics of one coordinator, in a registry of its own (tests run several coordinators in a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.submitted = Counter("aidd_tasks_submitted", "Tasks submitted to this coordinator", ["service"],
                                 registry=r)
        self.leased = Counter("aidd_tasks_leased", "Task attempts started through this coordinator", ["service"],
                              registry=r)
        self.finished = Counter("aidd_tasks_finished", "Tasks that reached a final state through this coordinator",
                                ["service", "status"], registry=r)
        self.retried = Counter("aidd_tasks_retried", "Tasks sent back for another attempt after one that failed "
                               "(reason: the attempt's end reason, or `operator` for an operator's retry)",
                               ["service", "reason"], registry=r)
        self.refused = Counter("aidd_reports_refused", "Agent reports refused: their attempt is no longer current "
                               "(the fence)", ["event"], registry=r)
        self.workers_lost = Counter("aidd_workers_lost", "Workers declared lost for want of heartbeats", registry=r)
        self.internal_errors = Counter("aidd_internal_errors", "Bugs (errors that are not a store's or the "
                                       "network's) caught by a background job, by job (see outages.py)", ["where"],
                                       registry=r)
        self.http = Histogram("aidd_http_request_duration_seconds", "HTTP request durations by route template",
                              ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.http_requests = Counter("aidd_http_requests", "HTTP requests by route template and status code",
                                     ["method", "route", "status"], registry=r)
        self.queue_wait = Histogram("aidd_task_queue_wait_seconds", "From submission to the first attempt's start",
                                    ["service"], buckets=TASK_BUCKETS, registry=r)
        self.run_time = Histogram("aidd_attempt_duration_seconds", "From an attempt's start to its end",
                                  ["service", "reason"], buckets=TASK_BUCKETS, registry=r)
        self.leader = Gauge("aidd_leader", "1 while this coordinator runs the timers (and exports the cluster "
                            "gauges), else 0", registry=r)
        self.build = Gauge("aidd_build_info", "The running version (1)", ["version", "python"], registry=r)
        self.cluster = ClusterCollector()
        r.register(self.cluster)

    def set_version(self, version: str) -> None:
        """Name the running version in `aidd_build_info` (the API knows it; see `api.app.package_version`)."""
        self.build.clear()
        self.build.labels(version, platform.python_version()).set(1)

    def publish(self, snapshot: ClusterSnapshot | None) -> None:
        """Lead with this snapshot (exported from now on), or, with None, stop leading."""
        self.cluster.publish(snapshot)
        self.leader.set(0 if snapshot is None else 1)

    def exposition(self) -> bytes:
        """The Prometheus text of every metric."""
        return generate_latest(self.registry)
