-- Helpers prepended to every script (scripts.py); they read only keys derived from the prefix.

-- The queue of a service and group; tasks that need labels or other resources than one CPU get a queue
-- per such shape (suffix `needs`), so a worker skips whole queues it cannot serve instead of scanning past
-- their tasks.
local function queue_key(prefix, service, group, needs)
  local key = prefix .. ':queue:service:' .. service .. ':' .. group
  if needs ~= nil and needs ~= '' then key = key .. ':' .. needs end
  return key
end

-- Enter queue `q` (of `service` and `group`) in its group's registry, which claims walk: call it whenever a
-- task goes into the queue. Its needs are the key's suffix after the service and group (see queue_key), so a
-- task hash names everything a promotion from the delayed set must register again.
local function register(prefix, q, service, group)
  local needs = string.sub(q, #queue_key(prefix, service, group, '') + 2)
  redis.call('HSET', prefix .. ':queues:' .. group, q, service .. '\t' .. needs)
  redis.call('SADD', prefix .. ':queue:groups', group)
end

-- Take task `id` out of queue `q` of `group` and the pending set. A queue left empty leaves the registry (and a
-- group left without queues the group set): claims and the queue-full check read only queues that hold tasks,
-- so a resource shape used once costs nothing once its tasks are gone.
local function dequeue(prefix, q, group, id)
  redis.call('ZREM', q, id)
  redis.call('ZREM', prefix .. ':queue:pending', id)
  if redis.call('EXISTS', q) == 0 then
    local registry = prefix .. ':queues:' .. group
    redis.call('HDEL', registry, q)
    if redis.call('EXISTS', registry) == 0 then redis.call('SREM', prefix .. ':queue:groups', group) end
  end
end

-- Remove task `id` from wherever the index holds it (its queue, the running sets, its worker) and
-- delete its hash. Returns nothing.
local function forget(prefix, id)
  local tkey = prefix .. ':tasks:' .. id
  local old = redis.call('HMGET', tkey, 'queue', 'worker', 'service', 'group')
  if old[1] then dequeue(prefix, old[1], old[4], id) end
  if old[2] then redis.call('SREM', prefix .. ':workers:' .. old[2] .. ':tasks', id) end
  if old[3] then redis.call('SREM', prefix .. ':queue:running:' .. old[3], id) end
  redis.call('ZREM', prefix .. ':queue:pending', id)
  redis.call('ZREM', prefix .. ':queue:delayed', id)
  redis.call('SREM', prefix .. ':queue:running', id)
  redis.call('DEL', tkey)
end
