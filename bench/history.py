"""A store with a long history, for the metrics and retention benchmarks: many finished tasks, a few active ones.

Everything is written straight into PostgreSQL (INSERT ... SELECT): `tasks` rows, the active ones recent (a day
of timeout, so no timer ends them) and the finished ones with finish times spread evenly over the last
`span_days` days, one attempt per task that ran, three log lines for every tenth attempt,
and `workers` hosts (every fifth with four GPUs) whose last telemetry is stored with them.
"""

from __future__ import annotations

from sqlalchemy import insert, text

from bench.console_refresh import GPU_EVERY, token, worker_id
from coordinator.db import create_engine, migrate
from coordinator.models import Base, Worker
from coordinator.workers import hash_token

SERVICES = ("admet", "docking", "inference", "rdkit", "vina")

SEED_TASKS = """
INSERT INTO tasks (id, service, task_type, name, input_params, priority, "group", labels, cpu, memory_gb, gpu,
    gpu_memory_gb, max_retries, timeout_s, retry_count, worker_losses, exclusive, retry_on, input_files, outputs,
    submitted_by, status, attempt_id, attempts, worker_id, gpus, end_reason, created_at, started_at, finished_at,
    updated_at)
SELECT gen_random_uuid(), (CAST(:services AS text[]))[1 + g % cardinality(CAST(:services AS text[]))], 'shell',
    'history ' || g, '{}', 2, 'default', '[]', 1, 0, 0, 0, 3, 86400, 0, 0, false, '["error","timeout","worker_lost"]',
    '[]', '[]', 'bench', s.status,
    CASE WHEN s.status = 'running' THEN gen_random_uuid() END, CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
    CASE WHEN s.status <> 'pending' THEN (CAST(:workers AS uuid[]))[1 + g % cardinality(CAST(:workers AS uuid[]))]
    END, CASE WHEN s.status = 'running' AND g % 4 = 0 THEN jsonb_build_array(g % 4) ELSE '[]' END,
    CASE WHEN s.finished THEN s.status END, s.at - interval '1 minute',
    CASE WHEN s.status <> 'pending' THEN s.at - interval '30 seconds' END, CASE WHEN s.finished THEN s.at END, s.at
FROM generate_series(1, CAST(:tasks AS int)) AS g,
LATERAL (SELECT CASE WHEN g <= CAST(:running AS int) THEN 'running'
                     WHEN g <= CAST(:running AS int) + CAST(:pending AS int) THEN 'pending'
                     WHEN g % 50 = 0 THEN 'failed' WHEN g % 50 = 1 THEN 'timeout' WHEN g % 50 = 2 THEN 'cancelled'
                     ELSE 'succeeded' END AS status,
                g > CAST(:running AS int) + CAST(:pending AS int) AS finished,
                CASE WHEN g <= CAST(:running AS int) + CAST(:pending AS int) THEN now() - make_interval(secs => g)
                     ELSE now() - make_interval(secs => CAST(:span_s AS float8) * g / CAST(:tasks AS int))
                END AS at) AS s
"""
SEED_ATTEMPTS = """
INSERT INTO attempts (id, task_id, number, worker_id, gpus, leased_at, started_at, ended_at, end_reason)
SELECT COALESCE(attempt_id, gen_random_uuid()), id, 1, worker_id, gpus, started_at, started_at, finished_at,
    end_reason
FROM tasks WHERE status <> 'pending'
"""
SEED_LOGS = """
INSERT INTO task_logs (task_id, attempt_id, stream, line)
SELECT a.task_id, a.id, 'stdout', 'history log line ' || n || ' of ' || a.task_id
FROM attempts AS a, generate_series(1, 3) AS n WHERE abs(hashtext(a.id::text)) % 10 = 0
"""


def worker_rows(workers: int) -> list[dict[str, object]]:
    """Bench workers with their last telemetry (GPU hosts at varying utilisation)."""
    rows: list[dict[str, object]] = []
    for i in range(workers):
        gpus = 4 if i % GPU_EVERY == 0 else 0
        rows.append({
            "id": worker_id(i), "hostname": f"bench-{i:04d}", "token_hash": hash_token(token(i)), "services": [],
            "groups": ["default"], "labels": [], "cpu_cores": 64, "memory_gb": 256, "slots": 16, "status": "online",
            "gpus": [{"index": g, "name": "NVIDIA H200", "memory_gb": 141} for g in range(gpus)],
            "metrics": {"used_cpu": 8, "used_memory_gb": 32, "gpus": [
                {"index": g, "utilization": (i * 7 + g * 13) % 100, "memory_used_gb": 20.5,
                 "memory_total_gb": 141} for g in range(gpus)]}})
    return rows


async def seed(database_url: str, tasks: int, workers: int = 200, running: int = 2_000, pending: int = 20_000,
               span_days: float = 200, logs: bool = True) -> None:
    """Empty every table, then write `tasks` tasks (`running` running, `pending` pending, the rest finished over
    `span_days`), their attempts and log lines, and `workers` workers."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            await conn.execute(insert(Worker), worker_rows(workers))
            await conn.execute(text(SEED_TASKS), {
                "tasks": tasks, "running": min(running, tasks), "pending": pending, "span_s": span_days * 86400,
                "services": list(SERVICES), "workers": [worker_id(i) for i in range(workers)]})
            await conn.execute(text(SEED_ATTEMPTS))
            if logs:
                await conn.execute(text(SEED_LOGS))
        async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
