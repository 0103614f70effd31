-- Inbound QoS 2 PUBLISHes of one turn of the event loop reserve their packet identifiers before
-- they are published (inbound-qos2.ts): an identifier whose record is a stored packet was
-- published already (the PUBLISH is a resend: PUBREC only); any other (none, or another
-- connection's `pending:<token>[/<origin>]`, whose answer may never come) becomes this one's.
-- The publish script (publish-lua/) then publishes only while the record is still this one's.
-- A resend (DUP) that takes a reservation over keeps its origin, the id every attempt of the
-- message is published under: the first attempt may have reached subscribers (its PUBLISH ran
-- on a primary that died before its mark was replicated), and their nodes skip it for them.
-- KEYS per reservation, 1 each: its session's inbound QoS 2 hash (a session may repeat).
-- ARGV per reservation, 3 each: the packet identifier, the record `pending:<token>`, "1" if
--   the PUBLISH is a resend (DUP), else "0".
-- Returns per reservation the stored packet when it was published, the record written when a
-- resend took a reservation over (`pending:<token>/<origin>`), else nil (reserved afresh).
local results = {}
for i = 1, #KEYS do
  local id, mine, dup = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local record = redis.call("HGET", KEYS[i], id)
  if record and string.sub(record, 1, 8) ~= "pending:" then
    results[i] = record
  elseif record and dup == "1" then
    local origin = string.match(record, "/(.*)$") or string.sub(record, 9)
    local taken = mine .. "/" .. origin
    redis.call("HSET", KEYS[i], id, taken)
    results[i] = taken
  else
    redis.call("HSET", KEYS[i], id, mine)
    results[i] = false
  end
end
return results
