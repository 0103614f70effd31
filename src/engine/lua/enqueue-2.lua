-- Queues packets for one session, then trims its queue to the cap: the oldest messages go,
-- PUBRELs stay (messages already delivered whose PUBCOMP is awaited, bounded by the in-flight
-- window). Both keys are the session's (one hash slot).
-- KEYS[1] the session's queue (list of refs, oldest first)
-- KEYS[2] the session's packets (hash: ref -> packet)
-- ARGV[1] the cap (0: none); then pairs: ARGV[i] a packet's ref, ARGV[i + 1] the packet
-- Returns how many queued messages were dropped.
local cap = tonumber(ARGV[1])
local length = 0
for i = 2, #ARGV, 2 do
  redis.call("HSET", KEYS[2], ARGV[i], ARGV[i + 1])
  length = redis.call("RPUSH", KEYS[1], ARGV[i])
end
if cap == 0 or length <= cap then return 0 end
local excess = length - cap
local dropped = 0
local kept = {}
while dropped < excess and length > 0 do
  local entry = redis.call("LPOP", KEYS[1])
  length = length - 1
  if string.sub(entry, 1, 4) == "rel:" then
    kept[#kept + 1] = entry
  else
    -- the same packet queued twice (overlapping subscriptions) shares one field
    if redis.call("LPOS", KEYS[1], entry) == false then redis.call("HDEL", KEYS[2], entry) end
    dropped = dropped + 1
  end
end
for i = #kept, 1, -1 do redis.call("LPUSH", KEYS[1], kept[i]) end
return dropped
