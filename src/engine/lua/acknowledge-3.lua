-- Acknowledgements (PUBACK, PUBCOMP) of one session, read in one turn of the event loop: each
-- takes its delivery off the queue and forgets its packet identifier and packet.
-- KEYS[1] the session's queue, KEYS[2] its packets, KEYS[3] its packet identifiers (id -> ref)
-- ARGV[1] "1" to have each delivery's packet returned, else "0"; ARGV[2..] packet identifiers
-- Returns per identifier its packet (or nil: none, or not asked for).
local values = {}
for i = 2, #ARGV do
  local value = false
  local ref = redis.call("HGET", KEYS[3], ARGV[i])
  if ref then
    redis.call("HDEL", KEYS[3], ARGV[i])
    redis.call("LREM", KEYS[1], 0, ref)
    redis.call("LREM", KEYS[1], 0, "rel:" .. ref)
    if ARGV[1] == "1" then value = redis.call("HGET", KEYS[2], ref) end
    redis.call("HDEL", KEYS[2], ref)
  end
  values[i - 1] = value
end
return values
