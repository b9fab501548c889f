-- Moves one journey between its two layouts, or drops a copy that must not stay, atomically:
-- a compare-and-swap on what the caller read, so a change made since then (by any strategy)
-- makes the conversion fail harmlessly and the caller reads again.
-- KEYS[1] the journey document, KEYS[2] the journey hash, KEYS[3] its fencing counter (one slot)
-- ARGV[1] the layout to leave the journey in: 'document' or 'hash'
-- ARGV[2] the document as read ('' when it was absent)
-- ARGV[3] the hash's version field as read ('' when the hash was absent)
-- ARGV[4..] the journey in the target layout (the document, or the hash's field/value pairs);
--           none to keep the copy already in the target layout and drop the other one.
-- Returns 1 when done, 0 when either copy changed since it was read (nothing written).
-- Nothing touches the outbox: converting is not a change of the journey.
local doc = redis.call('GET', KEYS[1]) or ''
local version = redis.call('HGET', KEYS[2], 'version') or ''
if version == '' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if doc ~= ARGV[2] or version ~= ARGV[3] then return 0 end
if ARGV[1] == 'hash' then
  redis.call('DEL', KEYS[1])
  if #ARGV > 3 then
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[2], unpack(ARGV, 4))
  end
else
  redis.call('DEL', KEYS[2])
  if #ARGV > 3 then redis.call('SET', KEYS[1], ARGV[4]) end
end
-- A redlock holder that read the journey before it moved must read it again (see
-- document_update.lua).
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCR', KEYS[3]) end
return 1
