-- What CONNECTs of one turn of the event loop ask of their stored sessions, read as they
-- claim their client ids (after the claims, on the same connection).
-- KEYS per session, 4 each: its subscriptions (filter -> subscription), its wills (broker id
--   -> will), its inbound QoS 2 packets, its queue. On a Cluster all sessions of one call share
--   a slot.
-- ARGV[1] this node's broker id
-- Returns per session, 4 each: its subscriptions as field/value pairs; 1 if it holds a will
--   left with this broker, else 0; 1 if it holds inbound QoS 2 packets, else 0; 1 if its queue
--   holds anything, else 0.
local sessions = {}
for s = 1, #KEYS, 4 do
  sessions[#sessions + 1] = redis.call("HGETALL", KEYS[s])
  sessions[#sessions + 1] = redis.call("HEXISTS", KEYS[s + 1], ARGV[1])
  sessions[#sessions + 1] = redis.call("EXISTS", KEYS[s + 2])
  sessions[#sessions + 1] = redis.call("EXISTS", KEYS[s + 3])
end
return sessions
