-- Deletes the lock only if it still holds our token (never someone else's lock), and then,
-- when a channel is given, publishes the released token on it so waiters wake at once.
-- KEYS[1] lock key; ARGV[1] token; ARGV[2] (optional) release channel, in the lock's hash tag;
-- ARGV[3] '1' to publish with SPUBLISH (cluster: stays on the lock's node), else PUBLISH
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local deleted = redis.call('DEL', KEYS[1])
  if ARGV[2] then
    redis.call(ARGV[3] == '1' and 'SPUBLISH' or 'PUBLISH', ARGV[2], ARGV[1])
  end
  return deleted
end
return 0
