-- Creates a journey hash with all its fields at once, unless the journey exists.
-- KEYS[1] journey hash; ARGV field, value, field, value, ...
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
