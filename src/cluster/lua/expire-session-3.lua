-- A session's expiry fell due. It expires unless a live node owns the client id (its CONNECT
-- would have cancelled the timer: a stale owner entry, or a claim under way; the caller tries
-- again after the claim's lease). Expiring, the session record and the
-- dead connection's owner entry go, and a delayed will still pending is taken with it (it is
-- published now: a will goes out when its session ends at the latest).
-- KEYS[1] sessions (client id -> holder), KEYS[2] owners (client id -> "epoch|node|holder"),
--   KEYS[3] the timers (sorted set)
-- ARGV[1] the key of a node lease without the node id, ARGV[2] client id
-- Returns 0 (the client is connected: left alone), 1 (expired).
local leases, id = ARGV[1], ARGV[2]
local owner = redis.call("HGET", KEYS[2], id)
if owner then
  local node = string.match(owner, "^%d+|([^|]*)|")
  if node and redis.call("EXISTS", leases .. node) == 1 then return 0 end
  redis.call("HDEL", KEYS[2], id)
end
redis.call("HDEL", KEYS[1], id)
redis.call("ZREM", KEYS[3], "w|" .. id)
return 1
