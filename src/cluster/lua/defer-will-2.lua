-- A dead node's client left a will with a Will Delay Interval: it falls due after its delay,
-- counted from now (the death was just noticed), or when the session expires if sooner. Not
-- if the client is connected to a live node again: that will is void [MQTT-3.1.3-9]. Not while
-- the node holds its lease: it is only cut off from the others' pub/sub (aedes' will sweep
-- counts it dead by its heartbeats) and still holds its clients, whose wills are not due.
-- A will scheduled before the node died keeps its time.
-- KEYS[1] the timers (sorted set), KEYS[2] owners (client id -> "epoch|node|holder")
-- ARGV[1] the key of a node lease without the node id, ARGV[2] the key of a node's expiry
--   intervals without the node id, ARGV[3] the dead node, ARGV[4] client id, ARGV[5] the delay
--   in ms
-- Returns 1 (scheduled), 0 (the client is back: drop the will), -1 (the node lives: leave it).
local leases, intervals, dead, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call("EXISTS", leases .. dead) == 1 then return -1 end
local owner = redis.call("HGET", KEYS[2], id)
if owner then
  local node = string.match(owner, "^%d+|([^|]*)|")
  if node and node ~= dead and redis.call("EXISTS", leases .. node) == 1 then return 0 end
end
local delay = tonumber(ARGV[5])
local seconds = tonumber(redis.call("HGET", intervals .. dead, id) or "")
if seconds and seconds * 1000 < delay then delay = seconds * 1000 end
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call("ZADD", KEYS[1], "NX", string.format("%d", ms + delay), "w|" .. id)
return 1
