-- Records the packet identifiers deliveries went out with (a resumed session gets each again,
-- with DUP; PUBREC, PUBACK and PUBCOMP find the delivery by it): those of one turn of the event
-- loop, in one call.
-- KEYS per session, 1 each: its packet identifiers (hash: id -> ref). On a Cluster all
--   sessions of one call share a slot.
-- ARGV per session in KEYS order: the number n of deliveries, then n pairs: id, ref
local a = 1
for s = 1, #KEYS do
  local n = tonumber(ARGV[a])
  for i = 1, n do
    redis.call("HSET", KEYS[s], ARGV[a + 2 * i - 1], ARGV[a + 2 * i])
  end
  a = a + 1 + 2 * n
end
return #KEYS
