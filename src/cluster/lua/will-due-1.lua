-- A delayed will fell due: it is published unless a live node owns the client id (its CONNECT
-- would have cancelled the timer; the caller tries again after the claim's lease)
-- [MQTT-3.1.3-9].
-- KEYS[1] owners (client id -> "epoch|node|holder")
-- ARGV[1] the key of a node lease without the node id, ARGV[2] client id
-- Returns 1 to publish, 0 when the client is connected.
local owner = redis.call("HGET", KEYS[1], ARGV[2])
if owner then
  local node = string.match(owner, "^%d+|([^|]*)|")
  if node and redis.call("EXISTS", ARGV[1] .. node) == 1 then return 0 end
end
return 1
