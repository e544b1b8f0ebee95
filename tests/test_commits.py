"""A submission commits without waiting for the disk, is queued meanwhile, and is answered only once it is on disk."""

from __future__ import annotations

import asyncio

import pytest
from redis import Redis as SyncRedis
from sqlalchemy import text

from coordinator.service import Coordinator
from tests.helpers import submit_one

pytestmark = pytest.mark.anyio

INSERT_LSN = text("SELECT pg_current_wal_insert_lsn()")
FLUSHED_PAST = text("SELECT pg_current_wal_flush_lsn() >= CAST(:lsn AS pg_lsn)")


async def test_early_commits_skip_the_flush_and_the_rest_wait_for_it(coordinator: Coordinator) -> None:
    """Only the submissions' pool commits asynchronously; every other write is on disk before it returns."""
    core = coordinator.core
    for engine, expected in ((core.early_commits, "off"), (core.statements, "on"), (core.engine, "on")):
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW synchronous_commit"))).scalar_one() == expected


async def test_flush_makes_every_earlier_commit_durable(coordinator: Coordinator) -> None:
    """`Core.flush` returns with the WAL on disk past an early commit made before it (several times over: the WAL
    writer flushes such commits on its own, a fraction of a millisecond to 200 ms later)."""
    core = coordinator.core
    for _ in range(20):
        async with core.early_commits.connect() as conn:
            await conn.execute(text("SELECT pg_logical_emit_message(true, 'test', 'early')"))
            written = (await conn.execute(INSERT_LSN)).scalar_one()
        await core.flush()
        async with core.statements.connect() as conn:
            assert (await conn.execute(FLUSHED_PAST, {"lsn": written})).scalar_one()


async def test_callers_at_once_share_flushes(coordinator: Coordinator) -> None:
    """Twenty flushes asked for at once run as two (one that had begun, one after it for those who came later),
    and each caller still returns with the WAL on disk past what it committed before asking."""
    core = coordinator.core

    async def lsn_now() -> int:
        """Where the WAL is written up to (asyncpg reads a `pg_lsn` as its byte position)."""
        async with core.statements.connect() as conn:
            return int((await conn.execute(INSERT_LSN)).scalar_one())

    async def wal_written(since: int) -> int:
        return await lsn_now() - since

    one = []
    for _ in range(3):
        before = await lsn_now()
        await core.flush()
        one.append(await wal_written(before))
    async with core.early_commits.connect() as conn:
        await conn.execute(text("SELECT pg_logical_emit_message(true, 'test', 'early')"))
    before = await lsn_now()
    await asyncio.gather(*(core.flush() for _ in range(20)))
    assert await wal_written(before) < 5 * min(one)
    async with core.statements.connect() as conn:
        assert (await conn.execute(FLUSHED_PAST, {"lsn": before})).scalar_one()


async def test_a_submission_is_queued_before_its_flush_and_answered_after(coordinator: Coordinator,
                                                                         redis: SyncRedis) -> None:
    """While the flush is held, the task is already in the index (a lease could take it, and its own commit would
    flush the submission's too); the answer waits for the flush, and a failed flush is the submission's error."""
    core, real_flush, release = coordinator.core, coordinator.core.flush, asyncio.Event()
    flushing = asyncio.Event()

    async def held_flush() -> None:
        flushing.set()
        await release.wait()
        await real_flush()

    core.flush = held_flush  # type: ignore[method-assign]
    submitting = asyncio.create_task(submit_one(coordinator))
    await asyncio.wait_for(flushing.wait(), 10)
    keys = core.keys
    for _ in range(200):
        if redis.zcard(keys.pending) == 1:
            break
        await asyncio.sleep(0.01)
    assert redis.zcard(keys.pending) == 1
    await asyncio.sleep(0.1)
    assert not submitting.done()
    release.set()
    task_id = await asyncio.wait_for(submitting, 10)
    assert redis.zscore(keys.pending, task_id) is not None

    async def failed_flush() -> None:
        raise OSError("connection lost")

    core.flush = failed_flush  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await submit_one(coordinator)
