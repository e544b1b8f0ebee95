-- Helpers put before every script (`queue.py`), after the key prelude: every key comes from `K`, written from
-- `coordinator/keys.py` for the prefix in ARGV[1] (`keys.lua_prelude`).

-- Enter queue `q` (of `service` and `group`) in its group's registry, which claims walk: call it whenever a
-- task goes into the queue. Its needs are the key's suffix after the service and group (see K.service_queue), so
-- a task hash names everything a promotion from the delayed set must register again.
local function register(q, service, group)
  local needs = string.sub(q, #K.service_queue(service, group, '') + 2)
  redis.call('HSET', K.queues(group), q, service .. '\t' .. needs)
  redis.call('SADD', K.queue_groups, group)
end

-- Take emptied queue `q` out of its group's registry (and a group left without queues out of the group set):
-- claims and the queue-full check read only queues that hold tasks, so a resource shape used once costs nothing
-- once its tasks are gone.
local function forget_queue(q, group)
  local registry = K.queues(group)
  redis.call('HDEL', registry, q)
  if redis.call('EXISTS', registry) == 0 then redis.call('SREM', K.queue_groups, group) end
end

-- Take task `id` out of queue `q` of `group` and the pending set (an emptied queue leaves the registry).
local function dequeue(q, group, id)
  redis.call('ZREM', q, id)
  redis.call('ZREM', K.pending, id)
  if redis.call('EXISTS', q) == 0 then forget_queue(q, group) end
end

-- Remove task `id` from wherever the index holds it (its queue, the running sets, its worker) and
-- delete its hash. Returns nothing. A hash with a worker is a running task's, in no queue, pending or delayed set:
-- a claim and put_running write the worker and take the task out of those in the same script, unclaim deletes it
-- before queueing the task again. So a finished task's removal skips those sets (a third of `finish`'s time).
local function forget(id)
  local tkey = K.task(id)
  local old = redis.call('HMGET', tkey, 'queue', 'worker', 'service', 'group')
  if old[2] then
    redis.call('SREM', K.worker_tasks(old[2]), id)
  else
    if old[1] then dequeue(old[1], old[4], id) end
    redis.call('ZREM', K.pending, id)
    redis.call('ZREM', K.delayed, id)
  end
  if old[3] then redis.call('SREM', K.running_of(old[3]), id) end
  redis.call('SREM', K.running, id)
  redis.call('DEL', tkey)
end
