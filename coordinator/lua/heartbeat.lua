-- One heartbeat: record the beat and its telemetry, and read what answering it needs, in one round trip.
-- KEYS: none (every key comes from K, the prelude: see common.lua)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] worker id
-- ARGV[3] now, seconds since the epoch
-- ARGV[4] telemetry (JSON)
-- ARGV[5...] fields of the worker hash to set to now (the GPUs busy now, see coordinator.gpus.busy_field)
-- Returns {status (nil if none), 1 if its routing facts are there else 0, commands flag (nil if none), task ids...}
-- The gap since the previous beat (under 10 minutes) is kept as `gap`: the reaper waits a few of them.
local worker, now = ARGV[2], ARGV[3]
local key = K.worker(worker)
local live = redis.call('HMGET', key, 'status', 'route', 'cmds', 'hb')
if live[4] and tonumber(now) - tonumber(live[4]) < 600 then
  redis.call('HSET', key, 'gap', tonumber(now) - tonumber(live[4]))
end
redis.call('HSET', key, 'hb', now, 'metrics', ARGV[4])
for i = 5, #ARGV do redis.call('HSET', key, ARGV[i], now) end
redis.call('ZADD', K.heartbeats, now, worker)
local reply = {live[1], live[2] and 1 or 0, live[3]}
for _, id in ipairs(redis.call('SMEMBERS', K.worker_tasks(worker))) do reply[#reply + 1] = id end
return reply
