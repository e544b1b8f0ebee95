-- Take finished tasks out of the active index and remember them in the recent lists.
-- KEYS: none (derived from ARGV[1])
-- ARGV[1] key prefix
-- ARGV[2] final status: succeeded | failed | cancelled | timeout
-- ARGV[3] '1' to record them in the recent lists and counters, '0' when only repairing the index
-- ARGV[4..] task ids
-- Returns the number of tasks.
local prefix, status, remember = ARGV[1], ARGV[2], ARGV[3] == '1'
local completed, failed = prefix .. ':queue:completed', prefix .. ':queue:failed'
for i = 4, #ARGV do
  forget(prefix, ARGV[i])
  if remember then
    redis.call('LPUSH', completed, ARGV[i])
    if status == 'failed' or status == 'timeout' then redis.call('LPUSH', failed, ARGV[i]) end
  end
end
if remember then
  redis.call('LTRIM', completed, 0, 999)
  redis.call('LTRIM', failed, 0, 999)
  redis.call('HINCRBY', prefix .. ':stats:counters', status, #ARGV - 3)
end
return #ARGV - 3
