-- Put tasks into the pending index (new, retried, requeued, backing off, or rebuilt from PostgreSQL),
-- first removing each from wherever it was.
-- KEYS: none (every key comes from K, the prelude: see common.lua; single Redis, not Cluster)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] now, ms
-- ARGV[3] JSON list of {id, service, group, needs ("a100+*cpu=4+*gpu=1": required labels and resources),
--         score (string), labels (" a b "), cpu, memory_gb, gpu, gpu_memory_gb,
--         due (string ms; later than now puts the task in the delayed set)}
-- Returns the number of tasks put.
local now = tonumber(ARGV[2])
local tasks = cjson.decode(ARGV[3])
for _, t in ipairs(tasks) do
  forget(t.id)
  local q = K.service_queue(t.service, t.group, t.needs)
  redis.call('HSET', K.task(t.id), 'status', 'pending', 'service', t.service, 'group', t.group,
    'queue', q, 'score', t.score, 'labels', t.labels, 'cpu', t.cpu, 'memory_gb', t.memory_gb, 'gpu', t.gpu,
    'gpu_memory_gb', t.gpu_memory_gb)
  if t.due and tonumber(t.due) > now then
    redis.call('ZADD', K.delayed, t.due, t.id)  -- its queue is registered when it comes due
  else
    redis.call('ZADD', q, t.score, t.id)
    redis.call('ZADD', K.pending, t.score, t.id)
    register(q, t.service, t.group)
  end
end
return #tasks
