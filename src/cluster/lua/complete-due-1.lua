-- Removes claimed members that still hold the claim's token: one cancelled, scheduled again or
-- claimed again meanwhile is left alone.
-- KEYS[1] the schedule (sorted set: member -> due time in ms)
-- ARGV[1] the token, ARGV[2..] members
-- Returns the number removed.
local token = tonumber(ARGV[1])
local removed = 0
for a = 2, #ARGV do
  local score = redis.call("ZSCORE", KEYS[1], ARGV[a])
  if score and tonumber(score) == token then
    removed = removed + redis.call("ZREM", KEYS[1], ARGV[a])
  end
end
return removed
