-- hash strategy: change one status field of a journey hash, with the transition check and the
-- version increment in the same atomic step. O(1) whatever the number of segments.
-- KEYS[1] journey hash
-- ARGV[1] the status field ('status', or 'segment:<id>:status')
-- ARGV[2] target status, ARGV[3] expected version ('' for none)
-- ARGV[4..] statuses the target may be reached from (from the Rust transition table)
-- Same replies as document_update.lua. Nothing is created for a missing segment.
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return {'not_found'} end
if ARGV[3] ~= '' and ARGV[3] ~= version then
  return {'version_mismatch', version}
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return {'segment_not_found'} end
if current == ARGV[2] then return {'unchanged', version} end
local allowed = false
for i = 4, #ARGV do
  if ARGV[i] == current then allowed = true break end
end
if not allowed then return {'invalid_transition', current} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'changed', tostring(redis.call('HINCRBY', KEYS[1], 'version', 1))}
