-- Writes a journey document and its outbox entry only if the caller's fencing token is the
-- newest one minted.
-- KEYS[1] journey document, KEYS[2] fencing counter, KEYS[3] outbox partition (same slot)
-- ARGV[1] the caller's token, ARGV[2] the new document, ARGV[3..] the outbox entry's fields
-- Returns {1, newest} when written, {0, newest} when the token is stale, {2, newest} when the
-- document is gone (a migration moved the journey to the hash layout); nothing written then.
local newest = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) ~= newest then
  return {0, newest}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {2, newest} end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], ARGV[2])
return {1, newest}
