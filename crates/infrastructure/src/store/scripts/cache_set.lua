-- The cache's capped write (store/cache.rs): one atomic step on the cache's one slot.
-- KEYS[1]: the entry; KEYS[2]: the index (a sorted set of keys by expiry, ms).
-- ARGV[1]: the value; ARGV[2]: the time to live in ms (0: never expires); ARGV[3]: the cap on
-- entries; ARGV[4]: the key as the index lists it; ARGV[5]: "1" to write only when absent.
-- Returns {1} stored, {0} refused (the cache is full), {2, value} absent-only and one is held.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
-- Entries that expired leave the count here (Redis deleted their values already).
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
if ARGV[5] == '1' then
  local held = redis.call('GET', KEYS[1])
  if held then
    return {2, held}
  end
end
if not redis.call('ZSCORE', KEYS[2], ARGV[4]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return {0}
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  redis.call('ZADD', KEYS[2], now_ms + ttl, ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], '+inf', ARGV[4])
end
return {1}
