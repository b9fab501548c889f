-- The write of `naive` and `local-lock`: the changed document and its outbox entry, as the
-- original wrote it (no version check: that is the bug they keep), but only while the document
-- still exists, so a journey a migration has moved to the hash layout is never written back
-- into a dead copy.
-- KEYS[1] the journey document, KEYS[2] the journey's outbox partition (same slot)
-- ARGV[1] the document, ARGV[2..] the outbox entry's fields
-- Returns 1 when written, 0 when the document is gone (nothing written).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[1], ARGV[1])
return 1
