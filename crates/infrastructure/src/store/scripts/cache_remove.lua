-- The cache's removal (store/cache.rs), keeping the index and the owners' counts exact.
-- KEYS as in cache_set.lua; ARGV[1]: the key as the index lists it.
-- Returns 1 when a value was removed, 0 when there was none.
local removed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local owner = redis.call('HGET', KEYS[3], ARGV[1])
if owner then
  if redis.call('HINCRBY', KEYS[4], owner, -1) <= 0 then
    redis.call('HDEL', KEYS[4], owner)
  end
  redis.call('HDEL', KEYS[3], ARGV[1])
end
return removed
