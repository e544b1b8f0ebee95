-- Take finished tasks out of the active index and count them.
-- KEYS: none (every key comes from K, the prelude: see common.lua)
-- ARGV[1] key prefix (the prelude's K reads it)
-- ARGV[2] final status: succeeded | failed | cancelled | timeout
-- ARGV[3] '1' to count them in the counters, '0' when only repairing the index
-- ARGV[4..] task ids
-- Returns the number of tasks.
local status, remember = ARGV[2], ARGV[3] == '1'
for i = 4, #ARGV do
  forget(ARGV[i])
end
if remember then
  redis.call('HINCRBY', K.counters, status, #ARGV - 3)
end
return #ARGV - 3
