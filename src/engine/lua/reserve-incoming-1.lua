-- Inbound QoS 2 PUBLISHes of one turn of the event loop reserve their packet identifiers before
-- they are published (inbound-qos2.ts): an identifier whose record is a stored packet was
-- published already (the PUBLISH is a resend: PUBREC only); any other (none, or another
-- connection's `pending:<token>`, whose answer may never come) becomes this one's. The publish
-- script (publish-lua/) then publishes only while the record is still this token's.
-- KEYS per reservation, 1 each: its session's inbound QoS 2 hash (a session may repeat).
-- ARGV per reservation, 2 each: the packet identifier, the record `pending:<token>`.
-- Returns per reservation the stored packet when it was published, else nil (reserved).
local results = {}
for i = 1, #KEYS do
  local id, mine = ARGV[2 * i - 1], ARGV[2 * i]
  local record = redis.call("HGET", KEYS[i], id)
  if record and string.sub(record, 1, 8) ~= "pending:" then
    results[i] = record
  else
    redis.call("HSET", KEYS[i], id, mine)
    results[i] = false
  end
end
return results
