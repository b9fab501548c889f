-- Creates a journey in one layout unless it exists in either: seeding, imports and POSTs never
-- make a second copy of a journey.
-- KEYS[1] the journey document, KEYS[2] the journey hash (same slot)
-- ARGV[1] 'document' or 'hash'; ARGV[2..] the document, or the hash's field/value pairs
-- Returns 1 when created, 0 when the journey exists (nothing written).
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
if ARGV[1] == 'hash' then
  redis.call('HSET', KEYS[2], unpack(ARGV, 2))
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
