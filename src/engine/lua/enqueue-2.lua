-- Queues one message for sessions, then trims each queue to the cap: the oldest messages go,
-- PUBRELs stay (messages already delivered whose PUBCOMP is awaited, bounded by the in-flight
-- window).
-- KEYS per session, 2 each: its queue (list of refs, oldest first), its packets (hash: ref ->
--   packet); a session listed twice (overlapping subscriptions) gets the message twice. On a
--   Cluster all sessions of one call share a slot.
-- ARGV[1] the cap (0: none), ARGV[2] the message's ref, ARGV[3] the message
-- Returns per session how many queued messages were dropped.
local cap = tonumber(ARGV[1])
local dropped = {}
for s = 1, #KEYS, 2 do
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
