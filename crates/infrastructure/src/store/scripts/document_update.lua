-- lua strategy: the whole read-modify-write of a journey document, atomically inside Redis,
-- with the change's outbox entry appended in the same step.
-- KEYS[1] journey document, KEYS[2] the journey's outbox partition, KEYS[3] the journey's hash,
-- KEYS[4] the journey's fencing counter (all one slot)
-- ARGV[1] segment id ('' to change the journey's own status)
-- ARGV[2] target status, ARGV[3] expected version ('' for none)
-- ARGV[4] the outbox entry's text after the version and the status changed from (journey id,
-- target, new status, occurred-at, event id[, traceparent]: outbox.rs, "The entry")
-- ARGV[5] completion event id ('' unless the change completes the journey)
-- ARGV[6..] statuses the target may be reached from (from the Rust transition table)
-- Replies {outcome, detail}: changed/unchanged + version, not_found (in neither layout), moved
-- (the journey is in the hash layout: nothing written), segment_not_found,
-- version_mismatch + version, invalid_transition + current status, corrupt + why.
-- Every check runs before the first write (a script that fails after writing keeps its writes).
local raw = redis.call('GET', KEYS[1])
if not raw then
  if redis.call('EXISTS', KEYS[3]) == 1 then return {'moved'} end
  return {'not_found'}
end
-- A document that does not decode is answered as corrupt, never as a script error (which the
-- service would report as Redis being unavailable, and a client would retry for ever).
local decoded, doc = pcall(cjson.decode, raw)
if not decoded or type(doc) ~= 'table' or type(doc.segments) ~= 'table' then
  return {'corrupt', 'the journey document is not a journey: ' .. tostring(doc)}
end
local version = tonumber(doc.version) or 0
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= version then
  return {'version_mismatch', tostring(version)}
end
local holder = doc
if ARGV[1] ~= '' then
  holder = nil
  for _, segment in ipairs(doc.segments) do
    if segment.segmentId == ARGV[1] then holder = segment break end
  end
  if not holder then return {'segment_not_found'} end
end
local current = holder.status
if current == ARGV[2] then return {'unchanged', tostring(version)} end
local allowed = false
for i = 6, #ARGV do
  if ARGV[i] == current then allowed = true break end
end
if not allowed then return {'invalid_transition', tostring(current)} end
holder.status = ARGV[2]
version = version + 1
doc.version = version
local out = cjson.encode(doc)
-- cjson writes an empty list as {}; restore it. Only the top-level "segments" key can match:
-- inside a JSON string a quote is always escaped, and no other object has that key.
if next(doc.segments) == nil then
  out = string.gsub(out, '"segments":{}', '"segments":[]', 1)
end
-- The outbox entry (documented in outbox.rs). The total is cjson's text of the price: 14
-- significant digits, exact for every valid price (see money.rs).
local change = tostring(version) .. ' ' .. current .. ' ' .. ARGV[4]
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'change', change, 'done_id', ARGV[5],
    'customer', doc.passengerEmail, 'total', cjson.encode(doc.totalPrice))
else
  redis.call('XADD', KEYS[2], '*', 'change', change)
end
redis.call('SET', KEYS[1], out)
-- A redlock holder may be working on this journey (its fencing counter exists): this write did
-- not take its lock, so make the holder's token stale; its fenced write is refused and retried
-- on what we wrote, instead of overwriting it.
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCR', KEYS[4]) end
return {'changed', tostring(version)}
