-- Move tasks whose retry backoff is over from the delayed set into their queues, registering each queue again
-- (a queue whose tasks are all delayed leaves the registry until one comes due).
-- KEYS: none (derived from ARGV[1])
-- ARGV[1] key prefix
-- ARGV[2] now, ms
-- ARGV[3] most tasks to move in one call
-- Returns the number moved.
local prefix = ARGV[1]
local delayed, pending = prefix .. ':queue:delayed', prefix .. ':queue:pending'
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do
  redis.call('ZREM', delayed, id)
  local f = redis.call('HMGET', prefix .. ':tasks:' .. id, 'queue', 'score', 'service', 'group')
  if f[1] then
    redis.call('ZADD', f[1], f[2], id)
    redis.call('ZADD', pending, f[2], id)
    register(prefix, f[1], f[3], f[4])
  end
end
return #due
