-- Claims members that fell due. Each is pushed back by the lease rather than removed, so that a
-- claimer that dies before completing it leaves it to fall due again for another node. The new
-- time is the claim's token: completing removes a member only while it still holds the token.
-- KEYS[1] the schedule (sorted set: member -> due time in ms)
-- ARGV[1] the lease in ms, ARGV[2] the most members to claim
-- Returns the token, then the members claimed.
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local token = string.format("%d", ms + tonumber(ARGV[1]))
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ms, "LIMIT", 0, tonumber(ARGV[2]))
local replies = { token }
for _, member in ipairs(due) do
  redis.call("ZADD", KEYS[1], token, member)
  replies[#replies + 1] = member
end
return replies
