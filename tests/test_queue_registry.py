"""The queue registry holds only queues with tasks: every path that empties a queue takes it out, a delayed task
puts it back when it comes due, repairs drop what older versions left, and new resource shapes are bounded."""

from __future__ import annotations

import time
from typing import Any

import httpx
from redis import Redis as SyncRedis

from coordinator.config import Settings
from coordinator.keys import Keys
from coordinator.reconcile import rebuild_index, repair_drift
from coordinator.schemas import TaskSpec
from coordinator.server import BackgroundServer
from tests.helpers import serving
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body


def registry(redis: SyncRedis, keys: Keys) -> dict[str, dict[str, str]]:
    """Group -> {queue key: "service\\tneeds"}, as claims read it; every queue named there holds tasks."""
    found = {}
    for raw in redis.smembers(keys.queue_groups):
        group = raw.decode()
        found[group] = {k.decode(): v.decode() for k, v in redis.hgetall(keys.queues(group)).items()}
        assert found[group], f"group {group} is listed without queues"
        for queue in found[group]:
            assert redis.zcard(queue) > 0, f"{queue} is registered but empty"
    return found


def submit(client: httpx.Client, **fields: Any) -> str:
    reply = client.post("/api/v1/tasks", json=task_body(**fields))
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def keys_of(server: BackgroundServer) -> Keys:
    return server.coordinator.core.keys


def test_claims_take_emptied_queues_out(api_server: BackgroundServer, client: httpx.Client,
                                        redis: SyncRedis) -> None:
    """Three shapes in a group are registered while they hold tasks; a queue leaves when its last task is
    leased, and the group leaves once it has no queue."""
    keys = keys_of(api_server)
    for cpu in (1, 2, 2, 3):
        submit(client, group="g", resources={"cpu": cpu})
    queues = registry(redis, keys)["g"]
    assert queues == {keys.service_queue("admet", "g"): "admet\t",
                      keys.service_queue("admet", "g", "*cpu=2"): "admet\t*cpu=2",
                      keys.service_queue("admet", "g", "*cpu=3"): "admet\t*cpu=3"}
    agent = HttpAgent.register(client, groups=["g"], cpu_cores=8)
    agent.lease(max_tasks=2, cpu=3)  # the 1-CPU task and the first 2-CPU one
    assert set(registry(redis, keys)["g"]) == {keys.service_queue("admet", "g", "*cpu=2"),
                                                keys.service_queue("admet", "g", "*cpu=3")}
    assert len(agent.lease(max_tasks=5, cpu=8)) == 2
    assert registry(redis, keys) == {}


def test_cancel_and_requeue_keep_the_registry_to_queues_with_tasks(api_server: BackgroundServer,
                                                                    client: httpx.Client, redis: SyncRedis) -> None:
    """Cancelling a queued task takes out its emptied queue. A requeued running task is registered exactly while
    it is in its queue (it may first wait for its old attempt to stop); a task requeued out of its backoff is
    queued and registered at once, and the next lease and the report leave nothing behind."""
    keys = keys_of(api_server)
    cancelled = submit(client, group="g", resources={"cpu": 2})
    assert client.delete(f"/api/v1/tasks/{cancelled}").status_code == 200
    assert registry(redis, keys) == {}
    queue = keys.service_queue("admet", "g", "a100")
    agent = HttpAgent.register(client, groups=["g"], labels=["a100"])
    running = submit(client, group="g", labels=["a100"])
    agent.lease()
    assert client.post(f"/api/v1/tasks/{running}/requeue").status_code == 200
    assert (queue in registry(redis, keys).get("g", {})) == (redis.zscore(queue, running) is not None)
    assert client.delete(f"/api/v1/tasks/{running}").status_code == 200
    assert registry(redis, keys) == {}
    backing_off = submit(client, group="g", labels=["a100"], max_retries=2)
    [leased] = agent.lease()
    assert agent.report(leased, "failed", reason="error", error="exit 1").status_code == 200
    assert registry(redis, keys) == {}
    assert client.post(f"/api/v1/tasks/{backing_off}/requeue").status_code == 200
    assert registry(redis, keys) == {"g": {queue: "admet\ta100"}}
    [again] = agent.lease()
    assert again["task_id"] == backing_off and registry(redis, keys) == {}
    assert agent.report(again).status_code == 200
    assert registry(redis, keys) == {}


def test_a_delayed_task_registers_its_queue_when_it_comes_due(api_server: BackgroundServer, client: httpx.Client,
                                                               redis: SyncRedis) -> None:
    """A task backing off after a failure sits in the delayed set, not its queue, which leaves the registry; when
    its backoff is over the promotion registers the queue again (with its needs) and a worker gets it."""
    keys = keys_of(api_server)
    task = submit(client, group="g", resources={"cpu": 2, "gpu": 1}, max_retries=2)
    agent = HttpAgent.register(client, groups=["g"], cpu_cores=4, gpus=[{"index": 0, "memory_gb": 80}])
    [leased] = agent.lease()
    assert agent.report(leased, "failed", reason="error", error="exit 1").status_code == 200
    assert redis.zscore(keys.delayed, task) is not None
    assert registry(redis, keys) == {}
    time.sleep(0.3)  # the test settings' backoff base is 0.2 s
    assert api_server.call(lambda: api_server.coordinator.core.index.promote_due()) == 1
    queue = keys.service_queue("admet", "g", "*cpu=2+*gpu=1")
    assert registry(redis, keys) == {"g": {queue: "admet\t*cpu=2+*gpu=1"}}
    assert [t["task_id"] for t in agent.lease()] == [task]
    assert registry(redis, keys) == {}


def test_rebuild_and_drift_check_drop_what_older_versions_left(api_server: BackgroundServer, client: httpx.Client,
                                                               redis: SyncRedis) -> None:
    """An older version's single registry (entries never removed) and entries of queues emptied behind the
    scripts' back are dropped by the periodic drift check and by a rebuild; queues with tasks stay and serve."""
    keys = keys_of(api_server)
    core = api_server.coordinator.core
    kept = submit(client, group="g", resources={"cpu": 2})
    live = keys.service_queue("admet", "g", "*cpu=2")

    def leave_stale() -> None:
        old = {keys.service_queue("admet", "g", f"*cpu={i}"): f"admet\tg\t*cpu={i}" for i in range(3, 50)}
        redis.hset(f"{keys.prefix}:queues", mapping=old)
        redis.hset(keys.queues("g"), keys.service_queue("admet", "g", "*cpu=9"), "admet\t*cpu=9")
        redis.hset(keys.queues("old"), keys.service_queue("admet", "old"), "admet\t")
        redis.sadd(keys.queue_groups, "old")

    leave_stale()
    assert api_server.call(lambda: repair_drift(core)) == 0  # no task drifted
    assert registry(redis, keys) == {"g": {live: "admet\t*cpu=2"}}
    assert not redis.exists(f"{keys.prefix}:queues")
    leave_stale()
    api_server.call(lambda: rebuild_index(core))
    assert registry(redis, keys) == {"g": {live: "admet\t*cpu=2"}}
    assert not redis.exists(f"{keys.prefix}:queues")
    agent = HttpAgent.register(client, groups=["g"], cpu_cores=2)
    assert [t["task_id"] for t in agent.lease()] == [kept]


def test_pending_counts_read_every_group(api_server: BackgroundServer, client: httpx.Client) -> None:
    """The queue-full check counts pending tasks over every group and shape, and only tasks still queued."""
    for group, cpu in (("g1", 1), ("g1", 2), ("g2", 2), ("g2", 4)):
        submit(client, group=group, resources={"cpu": cpu})
    submit(client, service="docking", group="g3")
    index = api_server.coordinator.core.index
    asking = [TaskSpec.model_validate(task_body(service=service)) for service in ("admet", "docking", "vina")]
    assert api_server.call(lambda: index.room(asking)).pending == {"admet": 4, "docking": 1, "vina": 0}
    HttpAgent.register(client, groups=["g2"], cpu_cores=8).lease(max_tasks=5, cpu=8)
    assert api_server.call(lambda: index.room(asking)).pending == {"admet": 2, "docking": 1, "vina": 0}


def test_new_resource_shapes_past_the_bound_are_a_clear_429(settings: Settings, clean_db: None,
                                                            redis: SyncRedis) -> None:
    """With max_queue_shapes 2, a third queue with tasks in a group is refused with 429 naming `resources`;
    tasks for the queues that hold tasks (labels in any order) and other groups are still taken, and a queue
    emptied by a lease makes room again."""
    with serving(settings, max_queue_shapes=2) as (server, client):
        submit(client, resources={"cpu": 2}, labels=["b", "a"])
        submit(client, resources={"cpu": 3})
        refused = client.post("/api/v1/tasks", json=task_body(resources={"cpu": 4}))
        assert refused.status_code == 429, refused.text
        assert refused.json()["field"] == "resources"
        assert "max_queue_shapes 2" in refused.json()["error"] and "'default'" in refused.json()["error"]
        batch = [task_body(resources={"cpu": 3}), task_body(resources={"cpu": 2}, labels=["a", "b", "a"])]
        assert client.post("/api/v1/tasks", json=batch).status_code == 201
        mixed = [task_body(resources={"cpu": 3}), task_body(resources={"cpu": 5})]
        assert client.post("/api/v1/tasks", json=mixed).status_code == 429
        submit(client, group="other", resources={"cpu": 4})
        HttpAgent.register(client, cpu_cores=8).lease(max_tasks=5, cpu=8)  # empties the 3-CPU queue
        submit(client, resources={"cpu": 4})
        assert len(registry(redis, keys_of(server))["default"]) == 2
