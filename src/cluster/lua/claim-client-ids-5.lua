-- The client-id claims of the CONNECTs authenticated in one turn of the event loop, in order.
-- A claim is refused when a stored session of the id, or its live connection on another node,
-- belongs to another identity. Otherwise the stored-session record follows the CONNECT (Clean
-- Start drops the stored session [MQTT-3.1.2-4]; a session that outlives its connection is kept
-- for its holder) and this node becomes the id's owner under a new epoch, larger than any given
-- before. Epochs start from Redis' clock in microseconds, so they keep growing even after Redis
-- lost its data. The session's timers (expiry, delayed will) are cancelled: the client is back
-- [MQTT-3.1.3-9]. An MQTT 5 session's expiry interval is kept under this node's id, for the
-- survivors to start its expiry if this node dies.
-- KEYS[1] sessions (client id -> holder), KEYS[2] owners (client id -> "epoch|node|holder"),
--   KEYS[3] the last epoch given, KEYS[4] the timers (sorted set), KEYS[5] nodes with expiry
--   intervals kept (set)
-- ARGV[1] this node's id, ARGV[2] the key of a node lease without the node id, ARGV[3] the key
--   of a node's expiry intervals (hash: client id -> seconds) without the node id; then per
--   claim, 5 each: client id, "1" for Clean Start, holder, "1" if the session outlives its
--   connection, the MQTT 5 session expiry interval in seconds ("" for MQTT 3.1.1)
-- Returns per claim, 5 each: -1 (refused), 0 or 1 (a stored session existed); the epoch as
--   text ("" when refused); the live node displaced, or ""; 1 if a delayed will was cancelled;
--   1 if a connection (live or not) owned the id before, else 0.
local node, leases, intervals = ARGV[1], ARGV[2], ARGV[3]
local now = redis.call("TIME")
local epoch = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call("GET", KEYS[3]) or "0")
local given, kept = false, false
local replies = {}
for a = 4, #ARGV, 5 do
  local id, cleanStart, holder, persist, expiry = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local refused, displaced, owning = false, "", nil
  local owner = redis.call("HGET", KEYS[2], id)
  if owner then
    local _, node_, owned = string.match(owner, "^(%d+)|([^|]*)|(.*)$")
    owning = node_
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
    replies[#replies + 1] = 0
    replies[#replies + 1] = 1
  else
    local existed = 0
    if previous and cleanStart ~= "1" then existed = 1 end
    if persist == "1" then
      redis.call("HSET", KEYS[1], id, holder)
    else
      redis.call("HDEL", KEYS[1], id)
    end
    if owning and owning ~= node then redis.call("HDEL", intervals .. owning, id) end
    if expiry ~= "" then
      redis.call("HSET", intervals .. node, id, expiry)
      kept = true
    else
      redis.call("HDEL", intervals .. node, id)
    end
    redis.call("ZREM", KEYS[4], "s|" .. id)
    local cancelled = redis.call("ZREM", KEYS[4], "w|" .. id)
    if epoch <= last then epoch = last + 1 end
    last = epoch
    given = true
    -- Lua 5.1 numbers are doubles: written with %d, not "..", which would round them to 14 digits
    local text = string.format("%d", epoch)
    redis.call("HSET", KEYS[2], id, text .. "|" .. node .. "|" .. holder)
    replies[#replies + 1] = existed
    replies[#replies + 1] = text
    replies[#replies + 1] = displaced
    replies[#replies + 1] = cancelled
    replies[#replies + 1] = owner and 1 or 0
  end
end
if given then redis.call("SET", KEYS[3], string.format("%d", last)) end
if kept then redis.call("SADD", KEYS[5], node) end
return replies
