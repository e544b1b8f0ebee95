-- Mark tasks running on a worker in the index (used when rebuilding it from PostgreSQL).
-- KEYS: none (every key comes from K, the prelude: see common.lua)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] JSON list of {id, service, group, worker, attempt, gpus (string "0,1")}
-- Returns the number of tasks put.
local tasks = cjson.decode(ARGV[2])
for _, t in ipairs(tasks) do
  forget(t.id)
  redis.call('HSET', K.task(t.id), 'status', 'running', 'service', t.service, 'group', t.group,
    'worker', t.worker, 'attempt', t.attempt, 'gpus', t.gpus)
  redis.call('SADD', K.running, t.id)
  redis.call('SADD', K.running_of(t.service), t.id)
  redis.call('SADD', K.worker_tasks(t.worker), t.id)
end
return #tasks
