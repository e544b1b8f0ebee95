-- Give claimed tasks back to their queues: their lease could not be confirmed in PostgreSQL (it is away), so
-- they must not sit claimed in the index, where no worker would get them, until a drift check.
-- KEYS: none (every key comes from K, the prelude: see common.lua)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] worker id
-- ARGV[3] JSON list of {id, attempt}: only a task still claimed by that worker for that attempt goes back
-- Returns the number given back.
local worker = ARGV[2]
local given = 0
for _, c in ipairs(cjson.decode(ARGV[3])) do
  local tkey = K.task(c.id)
  local f = redis.call('HMGET', tkey, 'status', 'worker', 'attempt', 'queue', 'score', 'service', 'group')
  if f[1] == 'running' and f[2] == worker and f[3] == c.attempt and f[4] then
    redis.call('SREM', K.running, c.id)
    redis.call('SREM', K.running_of(f[6]), c.id)
    redis.call('SREM', K.worker_tasks(worker), c.id)
    redis.call('HDEL', tkey, 'worker', 'attempt', 'gpus', 'leased_at')
    redis.call('HSET', tkey, 'status', 'pending')
    redis.call('ZADD', f[4], f[5], c.id)
    redis.call('ZADD', K.pending, f[5], c.id)
    register(f[4], f[6], f[7])
    given = given + 1
  end
end
return given
