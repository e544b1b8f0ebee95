-- Move tasks whose retry backoff is over from the delayed set into their queues, registering each queue again
-- (a queue whose tasks are all delayed leaves the registry until one comes due).
-- KEYS: none (every key comes from K, the prelude: see common.lua)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] now, ms
-- ARGV[3] most tasks to move in one call
-- Returns the number moved.
local delayed, pending = K.delayed, K.pending
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do
  redis.call('ZREM', delayed, id)
  local f = redis.call('HMGET', K.task(id), 'queue', 'score', 'service', 'group')
  if f[1] then
    redis.call('ZADD', f[1], f[2], id)
    redis.call('ZADD', pending, f[2], id)
    register(f[1], f[3], f[4])
  end
end
return #due
