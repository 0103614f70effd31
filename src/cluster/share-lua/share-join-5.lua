-- A member's connection joins a shared group (the group is made if new): it takes the backlog
-- into its queue (up to the cap) and gets what its queue holds (left by an earlier connection).
-- KEYS: [1] groups, [2] members, [3] registered sessions (set), [4] backlog, [5] this member's
--   queue (stream)
-- ARGV: [1] group id, [2] group name, [3] client id, [4] token, [5] most groups, [6] cap
-- Entries keep their origin (share-assign-4.lua) in field "o" as they move.
-- Returns {"quota"} (too many groups), or {"ok", entry id, message, origin, entry id, ...}.
local function origin(entry, owner)
  return entry[2][4] or (entry[1] .. "." .. string.sub(redis.sha1hex(owner), 1, 8))
end
if redis.call("HEXISTS", KEYS[1], ARGV[1]) == 0 then
  if redis.call("HLEN", KEYS[1]) >= tonumber(ARGV[5]) then return {"quota"} end
  redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
end
redis.call("HSET", KEYS[2], ARGV[3], ARGV[4])
redis.call("SADD", KEYS[3], ARGV[3])
local room = tonumber(ARGV[6]) - redis.call("XLEN", KEYS[5])
if room > 0 then
  for _, entry in ipairs(redis.call("XRANGE", KEYS[4], "-", "+", "COUNT", room)) do
    redis.call("XADD", KEYS[5], "*", "m", entry[2][2], "o", origin(entry, ""))
    redis.call("XDEL", KEYS[4], entry[1])
  end
end
local reply = {"ok"}
for _, entry in ipairs(redis.call("XRANGE", KEYS[5], "-", "+")) do
  reply[#reply + 1] = entry[1]
  reply[#reply + 1] = entry[2][2]
  reply[#reply + 1] = origin(entry, ARGV[3])
end
return reply
