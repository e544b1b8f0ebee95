-- What a submission's room check reads, in one round trip (it was four, three of them one after the other, on
-- every task's way to its start): the runnable tasks of the submission's services, over every group's queues,
-- and for each of its groups how many queues hold tasks and how many of the submission's queues would be new.
-- KEYS: none (every key comes from K, the prelude: see common.lua)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] JSON {services: [service...], groups: {group: [queue key...]}}
-- Returns JSON {pending: {service: count}, groups: {group: [queues with tasks, queues new to it]}}
local req = cjson.decode(ARGV[2])
local pending = {}
for _, service in ipairs(req.services) do pending[service] = 0 end
for _, group in ipairs(redis.call('SMEMBERS', K.queue_groups)) do
  local registry = redis.call('HGETALL', K.queues(group))
  for i = 1, #registry, 2 do
    local service = string.match(registry[i + 1], '^[^\t]*')
    if pending[service] then pending[service] = pending[service] + redis.call('ZCARD', registry[i]) end
  end
end
local groups = {}
for group, queues in pairs(req.groups) do
  local registry = K.queues(group)
  local opening = 0
  for _, q in ipairs(queues) do
    if redis.call('HEXISTS', registry, q) == 0 then opening = opening + 1 end
  end
  groups[group] = {redis.call('HLEN', registry), opening}
end
return cjson.encode({pending = pending, groups = groups})
