-- Schedules members to fall due after their delays, on Redis' clock: nodes' clocks may differ.
-- A member scheduled again gets its new time (and loses any claim on it).
-- KEYS[1] the schedule (sorted set: member -> due time in ms)
-- ARGV pairs: member, delay in ms
-- Returns the number of members scheduled.
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for a = 1, #ARGV, 2 do
  redis.call("ZADD", KEYS[1], string.format("%d", ms + tonumber(ARGV[a + 1])), ARGV[a])
end
return #ARGV / 2
