-- A connection ended: its owner entry goes, unless a newer connection's replaced it.
-- KEYS[1] owners (client id -> "epoch|node|holder")
-- ARGV[1] client id, ARGV[2] the epoch of the connection that ended
-- Returns 1 when the entry went, else 0.
local owner = redis.call("HGET", KEYS[1], ARGV[1])
if owner and string.sub(owner, 1, #ARGV[2] + 1) == ARGV[2] .. "|" then
  return redis.call("HDEL", KEYS[1], ARGV[1])
end
return 0
