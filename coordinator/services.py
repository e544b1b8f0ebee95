"""The service registry: per service, whether its queue is paused and how many of its tasks may run at once,
changed by operators at run time (API, `aidd services`, the console) and kept in PostgreSQL.

Claims read the rules from Redis (`config:service_limits`, `config:paused_services`); every change rewrites
both from PostgreSQL, as the index rebuild does, so all coordinators follow at once. A service needs no
registration to run tasks: a row exists only once an operator has set something for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert

from coordinator.core import Core, utcnow, write_audit
from coordinator.errors import ServiceNotFound
from coordinator.models import Service
from coordinator.schemas import ServiceChange

ACTIVE = text("SELECT service, count(*) FILTER (WHERE status = 'pending') AS pending, "
              "count(*) FILTER (WHERE status = 'running') AS running "
              "FROM tasks WHERE status IN ('pending', 'running') GROUP BY service")


@dataclass(frozen=True)
class ServiceState:
    """What the scheduler applies to one service now."""

    name: str
    paused: bool
    limit: int | None
    """Most tasks running at once: the registry's `max_running`, else the configured `service_limits`;
    None: no limit."""
    running: int
    """Tasks of the service running now (what the limit is checked against)."""
    max_running: int | None = None
    """The operator's limit (None: the configured one applies)."""
    configured_limit: int | None = None
    number: int | None = None
    """Stable integer id, once the service has a registry row."""
    description: str = ""
    pending: int = 0

    @property
    def at_limit(self) -> bool:
        """Whether a pending task of this service waits for one of its running tasks to end."""
        return self.limit is not None and self.running >= self.limit

    def view(self) -> dict[str, Any]:
        return {**asdict(self), "at_limit": self.at_limit}


class ServiceRegistry:
    """Reads and changes the registry; publishes its rules to the claim path."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def _rows(self) -> dict[str, Any]:
        """Registry rows by service name."""
        async with self.core.engine.connect() as conn:
            rows = (await conn.execute(select(*Service.__table__.c))).all()
        return {r.name: r for r in rows}

    def _limit(self, name: str, row: Any) -> int | None:
        if row is not None and row.max_running is not None:
            return row.max_running
        return self.core.settings.service_limits.get(name)

    async def publish(self) -> None:
        """Write the effective limits and the paused services to Redis (at start, and after every change)."""
        rows = await self._rows()
        names = set(rows) | set(self.core.settings.service_limits)
        limits = {n: limit for n in names if (limit := self._limit(n, rows.get(n))) is not None}
        await self.core.index.set_service_rules(limits, {n for n, r in rows.items() if r.paused})

    async def state(self, name: str) -> ServiceState:
        """One service as the scheduler treats it now: paused or not, its limit and its running count. Any
        name has a state (a service no one configured: not paused, no limit)."""
        async with self.core.engine.connect() as conn:
            row = (await conn.execute(select(*Service.__table__.c).where(Service.name == name))).first()
        running = int(await self.core.redis.scard(self.core.keys.running_of(name)))
        return self._state(name, row, running)

    def _state(self, name: str, row: Any, running: int, pending: int = 0) -> ServiceState:
        return ServiceState(name=name, paused=bool(row and row.paused), limit=self._limit(name, row),
                            running=running, max_running=row.max_running if row else None,
                            configured_limit=self.core.settings.service_limits.get(name),
                            number=row.number if row else None, description=row.description if row else "",
                            pending=pending)

    async def states(self) -> list[ServiceState]:
        """Every service that is registered, configured or has pending or running tasks, by name."""
        rows = await self._rows()
        async with self.core.engine.connect() as conn:
            active = {r.service: r for r in (await conn.execute(ACTIVE)).all()}
        return await self._states(rows, active)

    async def rules(self) -> list[ServiceState]:
        """The services that can hold their tasks back (registered or configured: paused, or at a limit), by name,
        without pending counts: what deciding why tasks wait needs, each second, without counting every pending
        task in PostgreSQL."""
        return await self._states(await self._rows(), {})

    async def _states(self, rows: dict[str, Any], active: dict[str, Any]) -> list[ServiceState]:
        names = sorted(set(rows) | set(self.core.settings.service_limits) | set(active))
        async with self.core.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.scard(self.core.keys.running_of(name))
            running = await pipe.execute()
        return [self._state(n, rows.get(n), int(r), int(active[n].pending) if n in active else 0)
                for n, r in zip(names, running, strict=True)]

    async def name_of(self, number: int) -> str:
        """The service with this stable number (an LLM-scheduler `model_id`)."""
        async with self.core.engine.connect() as conn:
            found = await conn.execute(select(Service.name).where(Service.number == number))
            name = found.scalar_one_or_none()
        if name is None:
            raise ServiceNotFound(str(number))
        return name

    async def change(self, name: str, change: ServiceChange, actor: str) -> ServiceState:
        """Set what `change` names (pause, limit, description), audited; claims follow at once. Resuming, or
        raising a limit, wakes waiting workers."""
        values = change.model_dump(exclude_unset=True)
        async with self.core.engine.begin() as conn:
            row = insert(Service).values(**{"name": name, "description": "", **values})
            await conn.execute(row.on_conflict_do_update(index_elements=[Service.name],
                                                         set_={**values, "updated_at": utcnow()}))
            await write_audit(conn, actor, "service.change", name, 1, values)
        await self.publish()
        await self.core.waker.wake_all()
        return await self.state(name)
