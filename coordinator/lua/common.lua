-- Helpers prepended to every script (scripts.py); they read only keys derived from the prefix.

-- Remove task `id` from wherever the index holds it (its queue, the running sets, its worker) and
-- delete its hash. Returns nothing.
local function forget(prefix, id)
  local tkey = prefix .. ':tasks:' .. id
  local old = redis.call('HMGET', tkey, 'queue', 'worker', 'service')
  if old[1] then redis.call('ZREM', old[1], id) end
  if old[2] then redis.call('SREM', prefix .. ':workers:' .. old[2] .. ':tasks', id) end
  if old[3] then redis.call('SREM', prefix .. ':queue:running:' .. old[3], id) end
  redis.call('ZREM', prefix .. ':queue:pending', id)
  redis.call('ZREM', prefix .. ':queue:delayed', id)
  redis.call('SREM', prefix .. ':queue:running', id)
  redis.call('DEL', tkey)
end

-- The queue of a service and group; tasks that need labels or other resources than one CPU get a queue
-- per such shape (suffix `needs`), so a worker skips whole queues it cannot serve instead of scanning past
-- their tasks.
local function queue_key(prefix, service, group, needs)
  local key = prefix .. ':queue:service:' .. service .. ':' .. group
  if needs ~= nil and needs ~= '' then key = key .. ':' .. needs end
  return key
end
