-- hash strategy: change one status field of a journey hash, with the transition check, the
-- version increment and the change's outbox entry in the same atomic step. O(1) whatever the
-- number of segments (the journey's fixed data is decoded only when the journey is completed).
-- KEYS[1] journey hash, KEYS[2] the journey's outbox partition, KEYS[3] the journey's document
-- (all one slot)
-- ARGV as in document_update.lua: segment id ('' for the journey's status), target status,
-- expected version, the outbox entry's text after version and old status, completion event id,
-- predecessors...
-- Same replies as document_update.lua, corrupt included ('moved': the journey is in the document layout).
-- Nothing is created for a missing segment. One HMGET reads the version and the status.
local field = 'status'
if ARGV[1] ~= '' then field = 'segment:' .. ARGV[1] .. ':status' end
local read = redis.call('HMGET', KEYS[1], 'version', field)
local version, current = read[1], read[2]
if not version then
  if redis.call('EXISTS', KEYS[3]) == 1 then return {'moved'} end
  return {'not_found'}
end
if not tonumber(version) then
  return {'corrupt', 'the version field is not a number: ' .. version}
end
if ARGV[3] ~= '' and ARGV[3] ~= version then
  return {'version_mismatch', version}
end
if not current then return {'segment_not_found'} end
if current == ARGV[2] then return {'unchanged', version} end
local allowed = false
for i = 6, #ARGV do
  if ARGV[i] == current then allowed = true break end
end
if not allowed then return {'invalid_transition', current} end
local next_version = tostring(tonumber(version) + 1)
local change = next_version .. ' ' .. current .. ' ' .. ARGV[4]
if ARGV[5] ~= '' then
  -- The journey as written whole (compact form), or the split form's header: both hold the
  -- passenger's email and the total price, which never change.
  local fixed = redis.call('HMGET', KEYS[1], 'journey', 'header')
  local decoded, header = pcall(cjson.decode, fixed[1] or fixed[2] or '')
  if not decoded or type(header) ~= 'table' then
    return {'corrupt', 'the journey field is not a journey'}
  end
  redis.call('XADD', KEYS[2], '*', 'change', change, 'done_id', ARGV[5],
    'customer', header.passengerEmail, 'total', cjson.encode(header.totalPrice))
else
  redis.call('XADD', KEYS[2], '*', 'change', change)
end
redis.call('HSET', KEYS[1], field, ARGV[2], 'version', next_version)
return {'changed', next_version}
