-- A per-client count with a ceiling (store/quota.rs), one atomic step.
-- KEYS[1]: the counts (a hash, client -> n). ARGV[1]: the client; ARGV[2]: the ceiling;
-- ARGV[3]: 'take' to count one more, 'give' to count one less.
-- Returns the count after the step, or -1 when taking one would pass the ceiling (nothing
-- changed). A count that reaches 0 leaves the hash, so it holds only clients with a count.
if ARGV[3] == 'take' then
  if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') >= tonumber(ARGV[2]) then
    return -1
  end
  return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
return n
