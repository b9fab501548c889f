-- The cache's capped write (store/cache.rs): one atomic step on the cache's one slot.
-- KEYS[1]: the entry; KEYS[2]: the index (a sorted set of keys by expiry, ms); KEYS[3]: each
-- entry's owner (a hash, key -> owner); KEYS[4]: each owner's count of entries (owner -> n).
-- ARGV[1]: the value; ARGV[2]: the time to live in ms (0: never expires); ARGV[3]: the cap on
-- entries; ARGV[4]: the key as the index lists it; ARGV[5]: "1" to write only when absent;
-- ARGV[6]: the writing client (the owner); ARGV[7]: the most entries one owner may hold.
-- Returns {1} stored, {0} refused (the cache is full), {2, value} absent-only and one is held,
-- {3} refused (the owner holds its quota of entries).
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

local function disown(key)
  local owner = redis.call('HGET', KEYS[3], key)
  if owner then
    if redis.call('HINCRBY', KEYS[4], owner, -1) <= 0 then
      redis.call('HDEL', KEYS[4], owner)
    end
    redis.call('HDEL', KEYS[3], key)
  end
end

-- Entries that expired leave the counts here (Redis deleted their values already). At most the
-- cap's worth of them, so the work is bounded.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)
if #expired > 0 then
  for _, key in ipairs(expired) do
    disown(key)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
end
if ARGV[5] == '1' then
  local held = redis.call('GET', KEYS[1])
  if held then
    return {2, held}
  end
end
local present = redis.call('ZSCORE', KEYS[2], ARGV[4])
if not present and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return {0}
end
local previous = present and redis.call('HGET', KEYS[3], ARGV[4])
if previous ~= ARGV[6] then
  -- The entry becomes this owner's, counted against its quota.
  if tonumber(redis.call('HGET', KEYS[4], ARGV[6]) or '0') >= tonumber(ARGV[7]) then
    return {3}
  end
  disown(ARGV[4])
  redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[6])
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
