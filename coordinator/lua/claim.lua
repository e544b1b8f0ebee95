-- Claim up to `max` pending tasks that fit one worker, atomically: two coordinators or two agents
-- never take the same task. Highest priority first, then oldest, across every queue the worker serves.
-- The caller (`QueueIndex.claim`) asks for a bounded number a call and carries what is left free into the next,
-- so no claim holds Redis for long whatever the lease's size.
-- KEYS: none (every key comes from K, the prelude: see common.lua)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] now, ms
-- ARGV[3] JSON {worker, services[] (empty: any), groups[], labels[], max, cpu, memory_gb (< 0: not checked),
--         gpus: [{index, free (fraction 0..1), memory_gb}], attempts: [one new attempt id per claimable task]}
-- Returns JSON {claimed: [{id, attempt, gpus: [index...]}] (an empty object when none), cpu, memory_gb,
-- gpus: [{index, free, memory_gb}]}: the claimed tasks and what is left free after them, amounts as text
-- written with 17 digits, so the next call starts from exactly the numbers this one ended with.
local req = cjson.decode(ARGV[3])
if redis.call('HGET', K.worker(req.worker), 'status') ~= 'online' then return '[]' end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end
local groups, services, labels = set_of(req.groups), set_of(req.services), set_of(req.labels)
local any_service = #req.services == 0

-- Whether this worker has what every task of a queue needs ("a100+*cpu=4+*mem=16+*gpu=1": labels, then the
-- resources its tasks all ask for; *gmem is GPU memory; a bare *gpu comes from indexes made before shapes).
local function can_serve(needs)
  for need in string.gmatch(needs, '[^+]+') do
    local name, amount = string.match(need, '^%*(%a+)=(.+)$')
    amount = tonumber(amount)
    if name == 'cpu' then
      if amount > tonumber(req.cpu) + 1e-9 then return false end
    elseif name == 'mem' then
      if tonumber(req.memory_gb) >= 0 and amount > tonumber(req.memory_gb) + 1e-9 then return false end
    elseif name == 'gpu' or name == 'gmem' or need == '*gpu' then
      if #req.gpus == 0 then return false end
    elseif not labels[need] then
      return false
    end
  end
  return true
end

-- Whole GPUs for gpu >= 1 (each completely free); otherwise the fullest GPU that still fits the share
-- (least free share, then least free memory), so shares pack and whole GPUs stay whole.
local function pick_gpus(gpu, gmem)
  local picked = {}
  if gpu >= 1 then
    for _, g in ipairs(req.gpus) do
      if #picked < math.ceil(gpu) and g.free >= 1 and g.memory_gb >= gmem then picked[#picked + 1] = g end
    end
    if #picked < math.ceil(gpu) then return nil end
    for _, g in ipairs(picked) do g.free, g.memory_gb = 0, g.memory_gb - gmem end
  else
    local best = nil
    for _, g in ipairs(req.gpus) do
      local fuller = best == nil or g.free < best.free or (g.free == best.free and g.memory_gb < best.memory_gb)
      if g.free >= gpu and g.free > 0 and g.memory_gb >= gmem and fuller then
        best = g
      end
    end
    if best == nil then return nil end
    best.free, best.memory_gb = best.free - gpu, best.memory_gb - gmem
    picked[1] = best
  end
  local indices = {}
  for i, g in ipairs(picked) do indices[i] = g.index end
  return indices
end

-- A paused service's queues are skipped whole: its tasks wait, in order, until it is resumed.
local paused = {}
local function is_paused(svc)
  if paused[svc] == nil then paused[svc] = redis.call('SISMEMBER', K.paused_services, svc) == 1 end
  return paused[svc]
end

-- Only the registries of the worker's own groups are read, and they hold only queues with tasks in them, so a
-- claim costs what the worker could take, not what other groups or old resource shapes left behind.
local window = 64 + req.max
local candidates, sources = {}, 0
for grp in pairs(groups) do
  local queues = redis.call('HGETALL', K.queues(grp))
  for i = 1, #queues, 2 do
    local svc, needs = string.match(queues[i + 1], '^([^\t]*)\t(.*)$')
    if (any_service or services[svc]) and not is_paused(svc) and can_serve(needs) then
      local members = redis.call('ZRANGE', queues[i], 0, window - 1, 'WITHSCORES')
      if #members > 0 then sources = sources + 1 end
      for j = 1, #members, 2 do
        candidates[#candidates + 1] = {members[j], tonumber(members[j + 1]), queues[i], grp}
      end
    end
  end
end
if sources > 1 then  -- one queue's ZRANGE is in order already: no sort (6 % of a claim's time, bench/RESULTS.md)
  table.sort(candidates, function(a, b) return a[2] < b[2] end)
end

-- Per task only its hash is read and written; the set and queue writes go out once per call, after the loop.
local claimed, limits, running = {}, {}, {}
local ids, taken = {}, {}  -- every claimed id; queue key -> {its group, the ids taken from it, its service}
local free_cpu, free_mem = tonumber(req.cpu), tonumber(req.memory_gb)
for _, c in ipairs(candidates) do
  if #claimed >= req.max then break end
  local id, tkey = c[1], K.task(c[1])
  local f = redis.call('HMGET', tkey, 'service', 'labels', 'cpu', 'memory_gb', 'gpu', 'gpu_memory_gb')
  if not f[1] then
    dequeue(c[3], c[4], id)  -- a queue entry without its hash: drop it
  else
    local svc, cpu, mem, gpu, gmem = f[1], tonumber(f[3]), tonumber(f[4]), tonumber(f[5]), tonumber(f[6])
    local fits = cpu <= free_cpu + 1e-9 and (free_mem < 0 or mem <= free_mem + 1e-9)
    for label in string.gmatch(f[2] or '', '%S+') do
      if not labels[label] then fits = false end
    end
    if fits then
      if limits[svc] == nil then limits[svc] = tonumber(redis.call('HGET', K.service_limits, svc) or '-1') end
      if limits[svc] >= 0 then  -- its running set counts what ran before this call, `running` what it took
        if running[svc] == nil then running[svc] = redis.call('SCARD', K.running_of(svc)) end
        if running[svc] >= limits[svc] then fits = false end
      end
    end
    local gpus = {}
    if fits and (gpu > 0 or gmem > 0) then
      gpus = pick_gpus(gpu, gmem)
      fits = gpus ~= nil
    end
    if fits then
      local attempt = req.attempts[#claimed + 1]
      local queue = taken[c[3]] or {c[4], {}, svc}
      taken[c[3]] = queue
      queue[2][#queue[2] + 1] = id
      ids[#ids + 1] = id
      if running[svc] ~= nil then running[svc] = running[svc] + 1 end
      redis.call('HSET', tkey, 'status', 'running', 'worker', req.worker, 'attempt', attempt,
        'gpus', table.concat(gpus, ','), 'leased_at', ARGV[2])
      free_cpu = free_cpu - cpu
      if free_mem >= 0 then free_mem = free_mem - mem end
      claimed[#claimed + 1] = {id = id, attempt = attempt, gpus = gpus}
    end
  end
end
if #claimed > 0 then
  for q, queue in pairs(taken) do
    redis.call('ZREM', q, unpack(queue[2]))
    redis.call('SADD', K.running_of(queue[3]), unpack(queue[2]))  -- a queue holds one service's tasks
    if redis.call('EXISTS', q) == 0 then forget_queue(q, queue[1]) end
  end
  redis.call('ZREM', K.pending, unpack(ids))
  redis.call('SADD', K.running, unpack(ids))
  redis.call('SADD', K.worker_tasks(req.worker), unpack(ids))
  redis.call('HINCRBY', K.counters, 'leased', #claimed)
end
local function exact(x) return string.format('%.17g', x) end
local left = {}
for i, g in ipairs(req.gpus) do left[i] = {index = g.index, free = exact(g.free), memory_gb = exact(g.memory_gb)} end
return cjson.encode({claimed = claimed, cpu = exact(free_cpu), memory_gb = exact(free_mem), gpus = left})
