-- Sessions' queues as a CONNECT resends them, read in one turn of the event loop; each
-- session's keys are read at one instant.
-- KEYS per session, 3 each: its queue (entries `<ref>`, or `rel:<ref>` once PUBREC'd), its
--   packets (`<ref>` -> packet), its packet identifiers (id -> queue entry). On a Cluster all
--   sessions of one call share a slot.
-- Returns per session, in order: an empty array when its queue is empty, else {entries,
--   packets as field/value pairs, packet identifiers as field/value pairs}.
local sessions = {}
for s = 1, #KEYS, 3 do
  local entries = redis.call("LRANGE", KEYS[s], 0, -1)
  if #entries == 0 then
    sessions[#sessions + 1] = {}
  else
    sessions[#sessions + 1] = {
      entries,
      redis.call("HGETALL", KEYS[s + 1]),
      redis.call("HGETALL", KEYS[s + 2]),
    }
  end
end
return sessions
