-- A member's connection leaves a shared group: what its queue holds goes to the other online
-- members (round robin over those with room), else to the backlog while sessions still hold the
-- group. A newer connection of the member keeps membership and queue (nothing is done). The
-- group ends with its last session.
-- KEYS: [1] groups, [2] members, [3] registered sessions, [4] backlog, [5] the member's queue
-- ARGV: [1] group id, [2] client id, [3] token of the connection that left, [4] "1" when the
--   session no longer holds the subscription, [5] node lease key prefix, [6] member queue key
--   prefix, [7] cap
-- Entries keep their origin (share-assign-4.lua) in field "o" as they move.
-- Returns {dropped, {member, token, entry id, message, origin, ...}, 1 if the group ended else
--   0}.
local current = redis.call("HGET", KEYS[2], ARGV[2])
if current and current ~= ARGV[3] then return {0, {}, 0} end
if current then redis.call("HDEL", KEYS[2], ARGV[2]) end
if ARGV[4] == "1" then redis.call("SREM", KEYS[3], ARGV[2]) end
local entries = redis.call("XRANGE", KEYS[5], "-", "+")
redis.call("DEL", KEYS[5])
if redis.call("SCARD", KEYS[3]) == 0 and redis.call("HLEN", KEYS[2]) == 0 then
  redis.call("DEL", KEYS[2], KEYS[3], KEYS[4])
  redis.call("HDEL", KEYS[1], ARGV[1])
  return {#entries, {}, 1}
end
local cap = tonumber(ARGV[7])
local targets = {}
local members = redis.call("HGETALL", KEYS[2])
for i = 1, #members, 2 do
  local node = string.match(members[i + 1], "^([^|]+)|")
  if node and redis.call("EXISTS", ARGV[5] .. node) == 1 then
    targets[#targets + 1] = {members[i], members[i + 1], redis.call("XLEN", ARGV[6] .. members[i])}
  end
end
local function origin(entry)
  return entry[2][4] or (entry[1] .. "." .. string.sub(redis.sha1hex(ARGV[2]), 1, 8))
end
local moved = {}
local dropped = 0
local next = 0
for _, entry in ipairs(entries) do
  local placed = false
  for k = 1, #targets do
    local target = targets[((next + k - 1) % #targets) + 1]
    if target[3] < cap then
      local o = origin(entry)
      local id = redis.call("XADD", ARGV[6] .. target[1], "*", "m", entry[2][2], "o", o)
      target[3] = target[3] + 1
      moved[#moved + 1] = target[1]
      moved[#moved + 1] = target[2]
      moved[#moved + 1] = id
      moved[#moved + 1] = entry[2][2]
      moved[#moved + 1] = o
      next = next + k
      placed = true
      break
    end
  end
  if not placed then
    if #targets == 0 and redis.call("XLEN", KEYS[4]) < cap then
      redis.call("XADD", KEYS[4], "*", "m", entry[2][2], "o", origin(entry))
    else
      dropped = dropped + 1
    end
  end
end
return {dropped, moved, 0}
