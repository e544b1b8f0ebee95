"""Which task a worker gets: priority then FIFO, per-service queues, groups, labels, resources, GPUs, limits."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis import Redis as SyncRedis

from coordinator import queue
from coordinator.config import Settings
from coordinator.schemas import WorkerCommandSpec
from coordinator.service import Coordinator
from tests.helpers import Agent, serving, started, submit, submit_one
from tests.support.tasks import task_body

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True, params=[queue.CLAIM_CHUNK, 1], ids=["chunked", "a-task-a-call"])
def claim_chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rule holds as well when a lease takes one task a claim call: a lease bigger than CLAIM_CHUNK is split
    into calls that carry the worker's free CPU, memory and GPUs from one to the next."""
    monkeypatch.setattr(queue, "CLAIM_CHUNK", request.param)


async def test_priority_first_then_fifo(coordinator: Coordinator) -> None:
    """Higher priority leaves first; equal priorities leave in submission order, one lease at a time."""
    ids = [await submit_one(coordinator, priority=p, name=f"t{i}") for i, p in enumerate([1, 3, 2, 3, 1, 2, -5])]
    agent = await Agent.register(coordinator)
    got = [(await agent.lease_ids())[0] for _ in ids]
    expected = [ids[1], ids[3], ids[2], ids[5], ids[0], ids[4], ids[6]]
    assert got == expected
    assert await agent.lease_ids() == []


async def test_one_lease_of_many_keeps_the_order(coordinator: Coordinator) -> None:
    """A lease of several tasks returns them in queue order, across services and submissions."""
    low = await submit(coordinator, 3, service="admet", priority=1)
    high = await submit(coordinator, 2, service="docking", priority=3)
    mid = await submit_one(coordinator, service="admet", priority=2)
    agent = await Agent.register(coordinator)
    assert await agent.lease_ids(max_tasks=10) == [*high, mid, *low]


async def test_extreme_priorities_keep_fifo(coordinator: Coordinator) -> None:
    """At both ends of the priority range the order is still exact (scores do not lose precision)."""
    top = await submit(coordinator, 3, priority=10_000)
    bottom = await submit(coordinator, 3, priority=-10_000)
    agent = await Agent.register(coordinator)
    assert await agent.lease_ids(max_tasks=10) == [*top, *bottom]


async def test_each_service_has_its_own_queue(coordinator: Coordinator) -> None:
    """A worker that serves `admet` never gets a `docking` task; one that declares no service gets any."""
    docking = await submit_one(coordinator, service="docking", priority=9)
    admet = await submit_one(coordinator, service="admet")
    admet_worker = await Agent.register(coordinator, service="admet")
    assert await admet_worker.lease_ids(max_tasks=5) == [admet]
    both = await Agent.register(coordinator, services=["docking", "vina"])
    assert await both.lease_ids(max_tasks=5) == [docking]
    stats = {q["service"]: q for q in await coordinator.stats.queues()}
    assert stats["admet"]["running"] == 1 and stats["docking"]["running"] == 1


async def test_any_service_worker_takes_every_queue(coordinator: Coordinator) -> None:
    """A worker registered without services takes tasks of every service."""
    ids = [await submit_one(coordinator, service=s) for s in ("admet", "docking", "inference")]
    anyone = await Agent.register(coordinator)
    assert await anyone.lease_ids(max_tasks=5) == ids


async def test_group_is_an_exact_match_and_defaults_to_default(coordinator: Coordinator) -> None:
    """Tasks without a group go to `default`; `gpu` tasks only to `gpu` workers (not `gpu2`, not `default`)."""
    plain = await submit_one(coordinator)
    gpu = await submit_one(coordinator, group="gpu")
    assert (await coordinator.tasks.get(uuid.UUID(plain)))["group"] == "default"
    near_miss = await Agent.register(coordinator, groups=["gpu2", "GPU"])
    assert await near_miss.lease_ids(max_tasks=5) == []
    default_worker = await Agent.register(coordinator)
    assert await default_worker.lease_ids(max_tasks=5) == [plain]
    legacy = await Agent.register(coordinator, group="gpu")  # the older single-group form
    assert await legacy.lease_ids(max_tasks=5) == [gpu]


async def test_worker_in_several_groups_serves_all_of_them(coordinator: Coordinator) -> None:
    """A worker in groups [docker, k8s] takes tasks of both, in priority order."""
    docker = await submit_one(coordinator, group="docker", priority=1)
    k8s = await submit_one(coordinator, group="k8s", priority=2)
    await submit_one(coordinator, group="linux", priority=3)
    agent = await Agent.register(coordinator, groups=["docker", "k8s"])
    assert await agent.lease_ids(max_tasks=5) == [k8s, docker]


async def test_tasks_a_worker_cannot_serve_never_starve_the_ones_it_can(coordinator: Coordinator) -> None:
    """200 GPU tasks and 200 `a100` tasks ahead of a plain one in the same service: a CPU-only, unlabelled
    worker still gets the plain task (such tasks queue apart, so it never scans past them)."""
    await submit(coordinator, 200, resources={"gpu": 1}, priority=9)
    await submit(coordinator, 200, labels=["a100"], priority=9)
    plain = await submit_one(coordinator, priority=1)
    cpu_only = await Agent.register(coordinator)
    assert await cpu_only.lease_ids(max_tasks=5) == [plain]
    gpu_host = await Agent.register(coordinator, labels=["a100"], gpus=[{"index": 0, "memory_gb": 80}])
    assert len(await gpu_host.lease_ids(max_tasks=5)) == 5


async def test_small_tasks_are_not_starved_behind_big_ones(coordinator: Coordinator) -> None:
    """200 8-CPU tasks, 200 2-GPU tasks and 200 64-GB tasks ahead of small ones in the same service and group: a
    worker with 2 CPUs, 16 GB and one GPU free still gets the small CPU task and the 1-GPU task (each resource
    shape queues apart, so a worker skips whole queues it has no room for instead of scanning past them)."""
    await submit(coordinator, 200, resources={"cpu": 8}, priority=9)
    await submit(coordinator, 200, resources={"cpu": 1, "gpu": 2}, priority=9)
    await submit(coordinator, 200, resources={"cpu": 1, "memory_gb": 64}, priority=9)
    small = await submit_one(coordinator, resources={"cpu": 1}, priority=1)
    one_gpu = await submit_one(coordinator, resources={"cpu": 1, "gpu": 1}, priority=1)
    agent = await Agent.register(coordinator, cpu_cores=2, memory_gb=16, gpus=[{"index": 0, "memory_gb": 80}])
    assert sorted(await agent.lease_ids(max_tasks=5, cpu=2, memory_gb=16)) == sorted([small, one_gpu])
    big = await Agent.register(coordinator, cpu_cores=64, memory_gb=512, gpus=[{"index": i, "memory_gb": 80}
                                                                               for i in range(2)])
    assert len(await big.lease_ids(max_tasks=3, cpu=64, memory_gb=512)) == 3  # the big ones still run


async def test_required_labels_must_all_be_present(coordinator: Coordinator) -> None:
    """A task needing [gpu, a100] runs only on a worker with both labels; unlabelled tasks run anywhere."""
    needs = await submit_one(coordinator, labels=["gpu", "a100"], priority=5)
    plain = await submit_one(coordinator)
    half = await Agent.register(coordinator, labels=["gpu", "high-mem"])
    assert await half.lease_ids(max_tasks=5) == [plain]
    full = await Agent.register(coordinator, labels=["a100", "gpu", "high-mem"])
    assert await full.lease_ids(max_tasks=5) == [needs]


async def test_cpu_and_memory_must_fit_what_the_worker_has_free(coordinator: Coordinator) -> None:
    """Tasks that need more CPU or memory than the lease offers are passed over; one lease deducts as it goes."""
    big_cpu = await submit_one(coordinator, resources={"cpu": 4})
    two = await submit_one(coordinator, resources={"cpu": 2, "memory_gb": 8})
    big_mem = await submit_one(coordinator, resources={"cpu": 1, "memory_gb": 64})
    also_two = await submit_one(coordinator, resources={"cpu": 2})
    one = await submit_one(coordinator, resources={"cpu": 1, "memory_gb": 4})
    agent = await Agent.register(coordinator, cpu_cores=3, memory_gb=16)
    assert await agent.lease_ids(max_tasks=10, cpu=3, memory_gb=16) == [two, one]
    assert await agent.lease_ids(max_tasks=10, cpu=3.5, memory_gb=100) == [big_mem, also_two]
    assert await agent.lease_ids(max_tasks=10, cpu=3.9) == []
    assert await agent.lease_ids(max_tasks=10, cpu=4) == [big_cpu]


async def test_whole_gpus_are_never_shared(coordinator: Coordinator) -> None:
    """Each 1-GPU task gets a GPU of its own, across leases, until the worker's GPUs are used up."""
    ids = await submit(coordinator, 3, resources={"gpu": 1})
    agent = await Agent.register(coordinator, gpus=[{"index": 0, "memory_gb": 80}, {"index": 1, "memory_gb": 80}])
    first, second = (await agent.lease())[0], (await agent.lease())[0]
    assert {first["task_id"], second["task_id"]} == set(ids[:2])
    assert sorted([*first["gpus"], *second["gpus"]]) == [0, 1]
    assert await agent.lease() == []
    assert await agent.report(first)
    third = (await agent.lease())[0]
    assert third["task_id"] == ids[2] and third["gpus"] == first["gpus"]


async def test_multi_gpu_task_gets_distinct_whole_gpus(coordinator: Coordinator) -> None:
    """A 2-GPU task gets two whole free GPUs; a GPU holding a share is not one of them."""
    share = await submit_one(coordinator, resources={"gpu": 0.5}, priority=9)
    pair = await submit_one(coordinator, resources={"gpu": 2})
    agent = await Agent.register(coordinator, gpus=[{"index": i, "memory_gb": 24} for i in range(3)])
    [leased_share] = await agent.lease()
    assert leased_share["task_id"] == share and len(leased_share["gpus"]) == 1
    [leased_pair] = await agent.lease()
    assert leased_pair["task_id"] == pair
    assert sorted(leased_pair["gpus"]) == sorted({0, 1, 2} - set(leased_share["gpus"]))


async def test_gpu_share_goes_to_the_partly_used_gpu(coordinator: Coordinator) -> None:
    """Told GPU 1 is half used, the coordinator puts a quarter share there and keeps GPU 0 whole."""
    quarter = await submit_one(coordinator, resources={"gpu": 0.25})
    agent = await Agent.register(coordinator, gpus=[{"index": 0, "memory_gb": 40}, {"index": 1, "memory_gb": 40}])
    ask = [{"index": 0, "free": 1.0, "memory_gb": 40}, {"index": 1, "free": 0.5, "memory_gb": 40}]
    [leased] = await agent.lease(gpus=ask)
    assert leased["task_id"] == quarter and leased["gpus"] == [1]


async def test_gpu_shares_are_packed(coordinator: Coordinator) -> None:
    """Two half-GPU tasks share one GPU, so a whole-GPU task still finds the other one free."""
    halves = await submit(coordinator, 2, resources={"gpu": 0.5})
    whole = await submit_one(coordinator, resources={"gpu": 1})
    agent = await Agent.register(coordinator, gpus=[{"index": 0, "memory_gb": 40}, {"index": 1, "memory_gb": 40}])
    both = await agent.lease(max_tasks=2)
    assert [t["task_id"] for t in both] == halves
    assert both[0]["gpus"] == both[1]["gpus"] and len(both[0]["gpus"]) == 1
    [leased] = await agent.lease()
    assert leased["task_id"] == whole and leased["gpus"] == [1 - both[0]["gpus"][0]]


async def test_gpu_memory_must_fit(coordinator: Coordinator) -> None:
    """A task asking 30 GB of GPU memory skips a 24 GB GPU and lands on the 48 GB one."""
    task = await submit_one(coordinator, resources={"gpu": 0.5, "gpu_memory_gb": 30})
    small = await Agent.register(coordinator, gpus=[{"index": 0, "memory_gb": 24}])
    assert await small.lease() == []
    mixed = await Agent.register(coordinator, gpus=[{"index": 0, "memory_gb": 24}, {"index": 1, "memory_gb": 48}])
    [leased] = await mixed.lease()
    assert leased["task_id"] == task and leased["gpus"] == [1]


async def test_gpu_task_skips_a_worker_without_gpus(coordinator: Coordinator) -> None:
    """A GPU task is not handed to a CPU-only worker, which takes the CPU task behind it instead."""
    await submit_one(coordinator, resources={"gpu": 1}, priority=5)
    cpu_task = await submit_one(coordinator)
    cpu_only = await Agent.register(coordinator)
    assert await cpu_only.lease_ids(max_tasks=5) == [cpu_task]


async def test_service_concurrency_limit(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """With service_limits {docking: 2} at most two docking tasks run at once; other services are not held."""
    async with started(settings, service_limits={"docking": 2}) as coordinator:
        docking = await submit(coordinator, 4, service="docking")
        admet = await submit_one(coordinator, service="admet")
        agent = await Agent.register(coordinator, cpu_cores=64)
        leased = await agent.lease(max_tasks=10)
        assert [t["task_id"] for t in leased] == [*docking[:2], admet]
        assert await agent.lease(max_tasks=10) == []
        assert await agent.report(leased[0])
        assert await agent.lease_ids(max_tasks=10) == [docking[2]]


def test_max_pending_per_service_is_a_clear_429(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """Past max_pending_per_service a submission gets 429 naming the service and the limit; others still fit."""
    with serving(settings, max_pending_per_service=3) as (_server, client):
        assert client.post("/api/v1/tasks", json=[task_body()] * 2).status_code == 201
        too_many = client.post("/api/v1/tasks", json=[task_body()] * 2)
        assert too_many.status_code == 429
        message = too_many.json()["error"]
        assert "admet" in message and "3" in message and "full" in message
        assert client.post("/api/v1/tasks", json=task_body()).status_code == 201
        assert client.post("/api/v1/tasks", json=task_body()).status_code == 429
        assert client.post("/api/v1/tasks", json=task_body(service="docking")).status_code == 201
        listed = client.get("/api/v1/tasks", params={"service": "admet"}).json()
        assert listed["total"] == 3


async def test_drained_worker_gets_nothing_until_resumed(coordinator: Coordinator) -> None:
    """After `drain` a worker's leases come back empty; `resume` lets it take work again."""
    task = await submit_one(coordinator)
    agent = await Agent.register(coordinator)
    await coordinator.workers.send([agent.id], WorkerCommandSpec(command="drain"), "test")
    assert await agent.status() == "draining"
    assert await agent.lease(max_tasks=5) == []
    assert (await agent.heartbeat())["status"] == "draining"
    await coordinator.workers.send([agent.id], WorkerCommandSpec(command="resume"), "test")
    assert await agent.lease_ids() == [task]


async def test_offline_worker_gets_nothing(coordinator: Coordinator) -> None:
    """A worker that said goodbye (deregistered) leases nothing."""
    await submit_one(coordinator)
    agent = await Agent.register(coordinator)
    await coordinator.workers.deregister(agent.id)
    assert await agent.lease(max_tasks=5) == []


async def test_waiting_lease_is_woken_by_a_submission(coordinator: Coordinator) -> None:
    """A lease long-polling on an empty queue returns a task submitted meanwhile at once (woken through Redis
    pub/sub), not at its next 2 s re-check."""
    agent = await Agent.register(coordinator)
    waiting = asyncio.create_task(agent.lease(wait_s=20))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    started_at = time.monotonic()
    task = await submit_one(coordinator)
    leased = await asyncio.wait_for(waiting, timeout=15)
    assert [t["task_id"] for t in leased] == [task]
    assert time.monotonic() - started_at < 1.0


async def test_a_claim_for_a_worker_no_longer_online_takes_nothing(coordinator: Coordinator) -> None:
    """A worker drained after its lease read its routing facts: the claim script refuses it (None: not online),
    and the lease gets no task (not an error)."""
    task = await submit_one(coordinator)
    agent = await Agent.register(coordinator)
    await coordinator.core.redis.hset(coordinator.core.keys.worker(str(agent.id)), "status", "draining")
    request = queue.ClaimRequest(worker=str(agent.id), groups=["default"], services=[], labels=[], max_tasks=1)
    assert await coordinator.core.index.claim(request, ["attempt-1"]) is None
    await coordinator.core.redis.hset(coordinator.core.keys.worker(str(agent.id)), "status", "online")
    assert await agent.lease_ids() == [task]


async def test_many_workers_live_state_in_chunks_in_order(coordinator: Coordinator,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's views and the pending reasons read every worker's live state a chunk of workers a script
    call: in the order asked, a worker Redis does not know as empty."""
    monkeypatch.setattr(queue, "WORKERS_CHUNK", 2)
    busy, drained, idle = [await Agent.register(coordinator, f"n{i}") for i in range(3)]
    await submit_one(coordinator)
    assert len(await busy.lease()) == 1
    await coordinator.workers.send([drained.id], WorkerCommandSpec(command="drain"), "test")
    ids = [str(busy.id), str(drained.id), str(uuid.uuid4()), str(idle.id)]
    assert await coordinator.core.index.worker_statuses(ids) == ["online", "draining", None, "online"]
    live = await coordinator.core.index.workers_live(ids)
    assert [(fields.get(b"status"), running) for fields, running in live] == [
        (b"online", 1), (b"draining", 0), (None, 0), (b"online", 0)]
    assert live[2][0] == {}
