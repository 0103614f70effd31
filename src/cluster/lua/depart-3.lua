-- A connection of an MQTT 5 session ended on this node: its timers start, unless a newer
-- connection of the client id claimed it meanwhile (a takeover: the session goes on there).
-- Its expiry interval, kept for the survivors should this node die, is no longer needed.
-- KEYS[1] owners (client id -> "epoch|node|holder"), KEYS[2] the timers (sorted set),
--   KEYS[3] sessions (client id -> holder)
-- ARGV[1] this node's id, ARGV[2] the key of a node's expiry intervals without the node id,
--   ARGV[3] client id, ARGV[4] the epoch of the connection that ended, ARGV[5] the session's
--   expiry in ms ("0": ends now, "-1": never, "": left as it is), ARGV[6] the will's delay in
--   ms ("" without a delayed will)
-- Returns 0 (superseded: nothing done), 1 (timers set), 2 (the session ended now: wipe it).
local node, intervals, id, epoch, session, will = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local owner = redis.call("HGET", KEYS[1], id)
if owner then
  local owning = string.match(owner, "^(%d+)|")
  if owning and tonumber(owning) > tonumber(epoch) then return 0 end
end
redis.call("HDEL", intervals .. node, id)
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if will ~= "" then
  redis.call("ZADD", KEYS[2], string.format("%d", ms + tonumber(will)), "w|" .. id)
end
if session == "0" then
  redis.call("HDEL", KEYS[3], id)
  redis.call("ZREM", KEYS[2], "s|" .. id)
  return 2
elseif session == "-1" then
  redis.call("ZREM", KEYS[2], "s|" .. id)
elseif session ~= "" then
  redis.call("ZADD", KEYS[2], string.format("%d", ms + tonumber(session)), "s|" .. id)
end
return 1
