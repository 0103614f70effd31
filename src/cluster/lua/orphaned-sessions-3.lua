-- The MQTT 5 sessions whose connections a dead node held: their expiry starts now (the death
-- is noticed within a node lease). Also run by a node on its own id at start, for what it held
-- before it crashed. A client that connected elsewhere since is left to that node. Takes up to
-- a batch at a time; run again until it returns less.
-- KEYS[1] the timers (sorted set), KEYS[2] nodes with expiry intervals kept (set),
--   KEYS[3] owners (client id -> "epoch|node|holder")
-- ARGV[1] the key of a node lease without the node id, ARGV[2] the key of a node's expiry
--   intervals without the node id, ARGV[3] the node, ARGV[4] the batch, ARGV[5] "1" to take
--   them even though the node holds its lease (its own, at start)
-- Returns how many sessions were taken, or -1 when the node lives. Needs Redis 6.2 (HRANDFIELD).
local leases, intervals, node = ARGV[1], ARGV[2], ARGV[3]
if ARGV[5] ~= "1" and redis.call("EXISTS", leases .. node) == 1 then return -1 end
local key = intervals .. node
-- HRANDFIELD rather than HSCAN from 0, which may find only emptied buckets of a large hash
local entries = redis.call("HRANDFIELD", key, tonumber(ARGV[4]), "WITHVALUES")
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local taken = 0
for i = 1, #entries, 2 do
  local id, seconds = entries[i], tonumber(entries[i + 1])
  redis.call("HDEL", key, id)
  local owner = redis.call("HGET", KEYS[3], id)
  local owning = owner and string.match(owner, "^%d+|([^|]*)|")
  if not owner or owning == node then
    if owner then redis.call("HDEL", KEYS[3], id) end
    if seconds and seconds < 4294967295 then
      redis.call("ZADD", KEYS[1], "NX", string.format("%d", ms + seconds * 1000), "s|" .. id)
    end
  end
  taken = taken + 1
end
if redis.call("EXISTS", key) == 0 then redis.call("SREM", KEYS[2], node) end
return taken
