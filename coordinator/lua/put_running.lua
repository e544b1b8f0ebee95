-- Mark tasks running on a worker in the index (used when rebuilding it from PostgreSQL).
-- KEYS: none (derived from ARGV[1])
-- ARGV[1] key prefix
-- ARGV[2] JSON list of {id, service, group, worker, attempt, gpus (string "0,1")}
-- Returns the number of tasks put.
local prefix = ARGV[1]
local tasks = cjson.decode(ARGV[2])
for _, t in ipairs(tasks) do
  forget(prefix, t.id)
  redis.call('HSET', prefix .. ':tasks:' .. t.id, 'status', 'running', 'service', t.service, 'group', t.group,
    'worker', t.worker, 'attempt', t.attempt, 'gpus', t.gpus)
  redis.call('SADD', prefix .. ':queue:running', t.id)
  redis.call('SADD', prefix .. ':queue:running:' .. t.service, t.id)
  redis.call('SADD', prefix .. ':workers:' .. t.worker .. ':tasks', t.id)
end
return #tasks
