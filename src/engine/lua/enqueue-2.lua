-- Queues one message for sessions, then trims each queue to the cap: the oldest messages go,
-- PUBRELs stay (messages already delivered whose PUBCOMP is awaited, bounded by the in-flight
-- window).
-- KEYS per session, 2 each: its queue (list of refs, oldest first), its packets (hash: ref ->
--   packet); a session listed twice (overlapping subscriptions) gets the message twice. On a
--   Cluster all sessions of one call share a slot.
-- ARGV[1] the cap (0: none), ARGV[2] the message's ref, ARGV[3] the message
-- ARGV[4] to ARGV[6], only for an inbound QoS 2 message whose packet identifier is reserved:
--   the identifier, the field that marks it queued and the reservation's record
--   (`pending:<token>/...`) in its publisher's inbound QoS 2 hash, which KEYS[1] and KEYS[2] then
--   both name. Queued only while the reservation is still this one, and only by its first
--   holder: a take-over publishes the message again; a stale enqueue (one held up in a failover)
--   comes after the reservation changed hands or ended.
-- Returns per session how many queued messages were dropped (nothing when not queued).
local cap = tonumber(ARGV[1])
local dropped = {}
local first = 1
if ARGV[4] then
  if redis.call("HGET", KEYS[1], ARGV[4]) ~= ARGV[6] then return dropped end
  if redis.call("HSETNX", KEYS[1], ARGV[5], "1") == 0 then return dropped end
  first = 3
end
for s = first, #KEYS, 2 do
  local queue, packets = KEYS[s], KEYS[s + 1]
  redis.call("HSET", packets, ARGV[2], ARGV[3])
  local length = redis.call("RPUSH", queue, ARGV[2])
  local count = 0
  if cap > 0 and length > cap then
    local excess = length - cap
    local kept = {}
    while count < excess and length > 0 do
      local entry = redis.call("LPOP", queue)
      length = length - 1
      if string.sub(entry, 1, 4) == "rel:" then
        kept[#kept + 1] = entry
      else
        -- the same message queued twice shares one field
        if redis.call("LPOS", queue, entry) == false then redis.call("HDEL", packets, entry) end
        count = count + 1
      end
    end
    for i = #kept, 1, -1 do redis.call("LPUSH", queue, kept[i]) end
  end
  dropped[#dropped + 1] = count
end
return dropped
