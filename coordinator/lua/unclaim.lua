-- Give claimed tasks back to their queues: their lease could not be confirmed in PostgreSQL (it is away), so
-- they must not sit claimed in the index, where no worker would get them, until a drift check.
-- KEYS: none (derived from ARGV[1])
-- ARGV[1] key prefix
-- ARGV[2] worker id
-- ARGV[3] JSON list of {id, attempt}: only a task still claimed by that worker for that attempt goes back
-- Returns the number given back.
local prefix, worker = ARGV[1], ARGV[2]
local given = 0
for _, c in ipairs(cjson.decode(ARGV[3])) do
  local tkey = prefix .. ':tasks:' .. c.id
  local f = redis.call('HMGET', tkey, 'status', 'worker', 'attempt', 'queue', 'score', 'service', 'group')
  if f[1] == 'running' and f[2] == worker and f[3] == c.attempt and f[4] then
    redis.call('SREM', prefix .. ':queue:running', c.id)
    redis.call('SREM', prefix .. ':queue:running:' .. f[6], c.id)
    redis.call('SREM', prefix .. ':workers:' .. worker .. ':tasks', c.id)
    redis.call('HDEL', tkey, 'worker', 'attempt', 'gpus', 'leased_at')
    redis.call('HSET', tkey, 'status', 'pending')
    redis.call('ZADD', f[4], f[5], c.id)
    redis.call('ZADD', prefix .. ':queue:pending', f[5], c.id)
    register(prefix, f[4], f[6], f[7])
    given = given + 1
  end
end
return given
