"""Aggregates for dashboards, the console's queue pane and Prometheus: one query each, never per row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from coordinator.core import Core
from coordinator.metrics import GPU_BUSY_UTILIZATION, ClusterSnapshot, gpu_readings
from coordinator.pending import PendingReasons
from coordinator.queue import as_str
from coordinator.states import WorkerStatus
from coordinator.workers import WorkerService

PER_SERVICE = text("""
SELECT service,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'succeeded' AND finished_at > now() - interval '1 hour') AS succeeded_1h,
       count(*) FILTER (WHERE status IN ('failed', 'timeout') AND finished_at > now() - interval '1 hour')
           AS failed_1h,
       extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')) AS oldest_pending_s
FROM tasks
WHERE status IN ('pending', 'running') OR finished_at > now() - interval '1 hour'
GROUP BY service ORDER BY service
""")

THROUGHPUT = text("""
SELECT service, floor(extract(epoch FROM now() - finished_at) / 60)::int AS minutes_ago, count(*) AS n
FROM tasks WHERE finished_at > now() - interval '30 minutes'
GROUP BY service, minutes_ago
""")

BY_STATUS = text("SELECT service, status, count(*) AS n FROM tasks GROUP BY service, status")

BY_DATE = text("""
SELECT day::date AS date,
       (SELECT count(*) FROM tasks WHERE created_at >= day AND created_at < day + interval '1 day') AS submitted,
       (SELECT count(*) FROM tasks WHERE status = 'succeeded' AND finished_at >= day
            AND finished_at < day + interval '1 day') AS succeeded,
       (SELECT count(*) FROM tasks WHERE status IN ('failed', 'timeout') AND finished_at >= day
            AND finished_at < day + interval '1 day') AS failed
FROM generate_series(date_trunc('day', now()) - make_interval(days => :days - 1), date_trunc('day', now()),
                     interval '1 day') AS day
ORDER BY day
""")

BATCHES = text("""
SELECT b.id, b.name, b.total, b.created_at,
       count(t.id) FILTER (WHERE t.status = 'succeeded') AS succeeded,
       count(t.id) FILTER (WHERE t.status IN ('failed', 'timeout', 'cancelled')) AS failed,
       count(t.id) FILTER (WHERE t.status = 'running') AS running,
       count(t.id) FILTER (WHERE t.status = 'pending') AS pending,
       count(t.id) FILTER (WHERE t.finished_at > now() - interval '5 minutes') AS done_5m
FROM batches b LEFT JOIN tasks t ON t.batch_id = b.id
GROUP BY b.id ORDER BY b.created_at DESC LIMIT :limit
""")

ACTIVE = text("""
SELECT service, status, count(*) AS n, extract(epoch FROM min(created_at)) AS oldest
FROM tasks WHERE status IN ('pending', 'running') GROUP BY service, status
""")
"""Active tasks per service: reads the (status, service) index over pending and running rows only, so its cost
follows the queues (bounded by max_pending_per_service) and the slots, never the finished history."""

ALLOCATED_GPUS = text("""
SELECT count(*) FROM (SELECT DISTINCT worker_id, jsonb_array_elements_text(gpus) FROM tasks
                      WHERE status = 'running' AND gpus <> '[]'::jsonb) AS held
""")

AUDIT = text("SELECT id, at, actor, action, target, count, detail FROM audit ORDER BY id DESC LIMIT :limit")


class StatsService:
    """Read-only aggregates."""

    def __init__(self, core: Core, reasons: PendingReasons) -> None:
        self.core = core
        self.reasons = reasons

    async def _rows(self, query: Any, **params: Any) -> list[dict[str, Any]]:
        async with self.core.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query, params)).all()]

    async def queues(self) -> list[dict[str, Any]]:
        """Per service: pending, running, finished in the last hour, oldest wait, 30-minute throughput, and why
        its queued tasks wait (`waiting`: [{code, message, count}], most first)."""
        services = await self._rows(PER_SERVICE)
        waiting = await self.reasons.by_service()
        spark: dict[str, list[int]] = {s["service"]: [0] * 30 for s in services}
        for row in await self._rows(THROUGHPUT):
            if row["service"] in spark and 0 <= row["minutes_ago"] < 30:
                spark[row["service"]][29 - row["minutes_ago"]] = row["n"]
        for s in services:
            s["oldest_pending_s"] = float(s["oldest_pending_s"]) if s["oldest_pending_s"] is not None else None
            s["throughput_per_min"] = spark[s["service"]]
            s["waiting"] = waiting.get(s["service"], [])
        return services

    async def task_counts(self) -> dict[str, Any]:
        """Tasks by status, overall and per service."""
        by_service: dict[str, dict[str, int]] = {}
        totals: dict[str, int] = {}
        for row in await self._rows(BY_STATUS):
            by_service.setdefault(row["service"], {})[row["status"]] = row["n"]
            totals[row["status"]] = totals.get(row["status"], 0) + row["n"]
        return {"total": sum(totals.values()), "by_status": totals, "by_service": by_service}

    async def by_date(self, days: int) -> list[dict[str, Any]]:
        """Submitted / succeeded / failed per day for the last `days` days."""
        return await self._rows(BY_DATE, days=days)

    async def batches(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent batches with their progress and recent rate."""
        return await self._rows(BATCHES, limit=limit)

    async def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest operator actions."""
        return await self._rows(AUDIT, limit=limit)

    async def counters(self) -> dict[str, int]:
        """Event counters kept in Redis since the index was built."""
        raw = await self.core.redis.hgetall(self.core.keys.counters)
        return {as_str(k): int(v) for k, v in raw.items()}


async def read_cluster(core: Core, workers: WorkerService) -> ClusterSnapshot:
    """The cluster's state for the Prometheus gauges (the leader's timers call this every few seconds): active
    tasks per service, workers by status, slots and GPUs. Costs O(active tasks + workers)."""
    snapshot = ClusterSnapshot()
    async with core.engine.connect() as conn:
        for row in (await conn.execute(ACTIVE)).all():
            counts = snapshot.pending if row.status == "pending" else snapshot.running
            counts[row.service] = row.n
            if row.status == "pending" and row.oldest is not None:
                snapshot.oldest_pending_at[row.service] = float(row.oldest)
        snapshot.gpus_allocated = int((await conn.execute(ALLOCATED_GPUS)).scalar() or 0)
    views = await workers.overview()
    online = [w for w in views if w["status"] != WorkerStatus.OFFLINE]
    for w in views:
        snapshot.workers[w["status"]] = snapshot.workers.get(w["status"], 0) + 1
    snapshot.slots = sum(w["slots"] for w in online)
    snapshot.slots_used = sum(w["running"] for w in online)
    snapshot.gpus = sum(len(w["gpus"]) for w in online)
    snapshot.gpu_readings = gpu_readings(views)
    snapshot.gpus_busy = sum(1 for g in snapshot.gpu_readings if g.utilization_ratio * 100 > GPU_BUSY_UTILIZATION)
    return snapshot
