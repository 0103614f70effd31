-- The client-id claims of the CONNECTs authenticated in one turn of the event loop, in order.
-- A claim is refused when a stored session of the id, or its live connection on another node,
-- belongs to another identity. Otherwise the stored-session record follows the CONNECT (clean
-- session 1 drops it [MQTT-3.1.2-6], 0 keeps it for its holder) and this node becomes the id's
-- owner under a new epoch, larger than any given before. Epochs start from Redis' clock in
-- microseconds, so they keep growing even after Redis lost its data.
-- KEYS[1] sessions (client id -> holder), KEYS[2] owners (client id -> "epoch|node|holder"),
--   KEYS[3] the last epoch given
-- ARGV[1] this node's id, ARGV[2] the key of a node lease without the node id; then per
--   claim, 3 each: client id, "1" for clean session, holder
-- Returns per claim, 3 each: -1 (refused), 0 or 1 (a stored session existed); the epoch as
--   text ("" when refused); the live node displaced, or "".
local node, leases = ARGV[1], ARGV[2]
local now = redis.call("TIME")
local epoch = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call("GET", KEYS[3]) or "0")
local given = false
local replies = {}
for a = 3, #ARGV, 3 do
  local id, clean, holder = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local refused, displaced = false, ""
  local owner = redis.call("HGET", KEYS[2], id)
  if owner then
    local _, owning, owned = string.match(owner, "^(%d+)|([^|]*)|(.*)$")
    if owning and owning ~= node and redis.call("EXISTS", leases .. owning) == 1 then
      if owned ~= holder then refused = true else displaced = owning end
    end
  end
  local previous = redis.call("HGET", KEYS[1], id)
  if previous and previous ~= holder then refused = true end
  if refused then
    replies[#replies + 1] = -1
    replies[#replies + 1] = ""
    replies[#replies + 1] = ""
  else
    local existed = 0
    if clean == "1" then
      redis.call("HDEL", KEYS[1], id)
    else
      redis.call("HSET", KEYS[1], id, holder)
      if previous then existed = 1 end
    end
    if epoch <= last then epoch = last + 1 end
    last = epoch
    given = true
    -- Lua 5.1 numbers are doubles: written with %d, not "..", which would round them to 14 digits
    local text = string.format("%d", epoch)
    redis.call("HSET", KEYS[2], id, text .. "|" .. node .. "|" .. holder)
    replies[#replies + 1] = existed
    replies[#replies + 1] = text
    replies[#replies + 1] = displaced
  end
end
if given then redis.call("SET", KEYS[3], string.format("%d", last)) end
return replies
