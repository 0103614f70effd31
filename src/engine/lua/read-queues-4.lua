-- Sessions' queues as a CONNECT resends them, read in one turn of the event loop; each
-- session's keys are read at one instant.
-- KEYS per session, 4 each: its queue (entries `<ref>`, or `rel:<ref>` once PUBREC'd), its
--   packets (`<ref>` -> packet), its packet identifiers (id -> queue entry), its released list
--   (pubrel-4.lua). On a Cluster all sessions of one call share a slot.
-- Returns per session, in order: an empty array when its queue and released list are empty,
--   else {entries, packets as field/value pairs, packet identifiers as field/value pairs,
--   released list}.
local sessions = {}
for s = 1, #KEYS, 4 do
  local entries = redis.call("LRANGE", KEYS[s], 0, -1)
  local released = redis.call("LRANGE", KEYS[s + 3], 0, -1)
  if #entries == 0 and #released == 0 then
    sessions[#sessions + 1] = {}
  elseif #entries == 0 then
    sessions[#sessions + 1] = { entries, {}, {}, released }
  else
    sessions[#sessions + 1] = {
      entries,
      redis.call("HGETALL", KEYS[s + 1]),
      redis.call("HGETALL", KEYS[s + 2]),
      released,
    }
  end
end
return sessions
