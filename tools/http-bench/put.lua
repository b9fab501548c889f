-- wrk script: PUT a segment status, alternating Delayed and Scheduled so every request is a
-- real change (the transition table allows both ways).
local n = 0
request = function()
  n = n + 1
  local status = (n % 2 == 0) and "Delayed" or "Scheduled"
  return wrk.format("PUT", "/api/journeys/JRN-001/segments/SEG-001-1/status",
    { ["Content-Type"] = "application/json" }, '{"status":"' .. status .. '"}')
end
