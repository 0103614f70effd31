-- Acknowledgements (PUBACK, PUBCOMP) read in one turn of the event loop: each takes its
-- delivery off its session's queue and forgets its packet identifier and packet.
-- KEYS per session, 3 each: its queue, its packets, its packet identifiers (id -> queue entry,
--   `<ref>` or `rel:<ref>`). On a Cluster all sessions of one call share a slot.
-- ARGV[1] "1" to have each delivery's packet returned, else "0"; then per session in KEYS
--   order: the number n of acknowledgements, then n packet identifiers
-- Returns per acknowledgement, in order, its packet (or nil: none, or not asked for).
local values = {}
local a = 2
for s = 1, #KEYS, 3 do
  local queue, packets, ids = KEYS[s], KEYS[s + 1], KEYS[s + 2]
  local n = tonumber(ARGV[a])
  for i = 1, n do
    local id = ARGV[a + i]
    local value = false
    local entry = redis.call("HGET", ids, id)
    if entry then
      local ref = entry
      if string.sub(entry, 1, 4) == "rel:" then ref = string.sub(entry, 5) end
      redis.call("HDEL", ids, id)
      redis.call("LREM", queue, 0, entry)
      if ARGV[1] == "1" then value = redis.call("HGET", packets, ref) end
      redis.call("HDEL", packets, ref)
    end
    values[#values + 1] = value
  end
  a = a + 1 + n
end
return values
