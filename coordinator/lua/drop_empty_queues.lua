-- Drop registry entries of queues that hold no task, and the single registry (K.old_queues) of versions before
-- the per-group ones (its entries were never removed; a rebuild registers every queue with tasks again). The
-- scripts keep the registries to queues with tasks; this repairs them after a rebuild, an older version or keys
-- deleted by hand.
-- KEYS: none (every key comes from K, the prelude: see common.lua)
-- ARGV[1] key prefix (the prelude's K reads it)
-- Returns the number of entries dropped (those of the old registry included).
local groups = K.queue_groups
local dropped = redis.call('HLEN', K.old_queues)
redis.call('DEL', K.old_queues)
for _, group in ipairs(redis.call('SMEMBERS', groups)) do
  local registry = K.queues(group)
  for _, q in ipairs(redis.call('HKEYS', registry)) do
    if redis.call('EXISTS', q) == 0 then
      redis.call('HDEL', registry, q)
      dropped = dropped + 1
    end
  end
  if redis.call('EXISTS', registry) == 0 then redis.call('SREM', groups, group) end
end
return dropped
