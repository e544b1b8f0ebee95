-- Put tasks into the pending index (new, retried, requeued, backing off, or rebuilt from PostgreSQL),
-- first removing each from wherever it was (unless ARGV[4] says they are new: nowhere yet).
-- KEYS: none (every key comes from K, the prelude: see common.lua; single Redis, not Cluster)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] now, ms
-- ARGV[3] JSON list of {id, service, group, needs ("a100+*cpu=4+*gpu=1": required labels and resources),
--         score (string), labels (" a b "), cpu, memory_gb, gpu, gpu_memory_gb,
--         due (string ms; later than now puts the task in the delayed set)}; each id once
-- ARGV[4] '1' when the tasks were just created (no earlier placement to remove)
-- Returns the number of tasks put.
-- Cost: one HSET per task; each queue gets one ZADD of all its tasks and is registered once, after the ZADDs
-- (a `forget` of another task may have left the queue empty and unregistered meanwhile). The caller bounds the
-- tasks per call (queue.py), which keeps both the time Redis is held and the ZADD's argument count small.
local now, new = tonumber(ARGV[2]), ARGV[4] == '1'
local tasks = cjson.decode(ARGV[3])
local into = {}  -- sorted set -> {score, id, score, id, ...}
local order = {}  -- the sorted sets in the order they are written: the service queues first, the global index last
local queues = {}  -- queue key -> {service, group}
for _, t in ipairs(tasks) do
  if not new then forget(t.id) end
  local q = K.service_queue(t.service, t.group, t.needs)
  redis.call('HSET', K.task(t.id), 'status', 'pending', 'service', t.service, 'group', t.group,
    'queue', q, 'score', t.score, 'labels', t.labels, 'cpu', t.cpu, 'memory_gb', t.memory_gb, 'gpu', t.gpu,
    'gpu_memory_gb', t.gpu_memory_gb)
  local sets = {K.delayed}  -- its queue is registered when it comes due
  if not (t.due and tonumber(t.due) > now) then
    sets = {q, K.pending}
    queues[q] = {t.service, t.group}
  end
  for _, key in ipairs(sets) do
    local members = into[key]
    if not members then
      members = {}
      into[key] = members
      if key ~= K.pending and key ~= K.delayed then order[#order + 1] = key end
    end
    members[#members + 1] = key == K.delayed and t.due or t.score
    members[#members + 1] = t.id
  end
end
-- A queue key that fails (a wrong type) fails the script before the task is in the global index, so the drift
-- check finds it missing and queues it again; written the other way round it would sit in the index, never leased.
order[#order + 1] = K.delayed
order[#order + 1] = K.pending
for _, key in ipairs(order) do
  local members = into[key]
  if members and #members > 0 then redis.call('ZADD', key, unpack(members)) end
end
for q, sg in pairs(queues) do register(q, sg[1], sg[2]) end
return #tasks
