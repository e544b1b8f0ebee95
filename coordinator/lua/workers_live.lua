-- The live state of many workers in one round trip (the operator's views, the pending reasons' snapshot): a
-- pipeline of a command or two per worker cost the coordinator ~20 µs of Python a command.
-- KEYS: none (every key comes from K, the prelude: see common.lua)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] '1': every field of each worker's hash and its running count; '0': its status only
-- ARGV[3...] worker ids
-- Returns one entry a worker, in order: {its hash's fields and values, flattened; its running count}, or its
-- status (nil if none)
local whole = ARGV[2] == '1'
local reply = {}
for i = 3, #ARGV do
  local worker = ARGV[i]
  if whole then
    reply[i - 2] = {redis.call('HGETALL', K.worker(worker)), redis.call('SCARD', K.worker_tasks(worker))}
  else
    reply[i - 2] = redis.call('HGET', K.worker(worker), 'status')
  end
end
return reply
