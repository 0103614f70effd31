-- Inbound QoS 2 PUBLISHes of one turn of the event loop reserve their packet identifiers before
-- they are published (inbound-qos2.ts): an identifier whose record is a stored packet was
-- published already (the PUBLISH is a resend: PUBREC only); any other (none, or another
-- connection's `pending:<token>/<origin>/<digest>`, whose answer may never come) becomes this
-- one's. The publish script (publish-lua/) then publishes only while the record is still this
-- one's. A resend of the same message (same digest of topic and payload: DUP is not a sign,
-- some clients resend without it) keeps the origin of the reservation it takes over, the id
-- every attempt of the message is published under: the first attempt may have reached
-- subscribers (its PUBLISH ran on a primary that died before its mark was replicated), and
-- their nodes skip it for them.
-- KEYS per reservation, 1 each: its session's inbound QoS 2 hash (a session may repeat).
-- ARGV per reservation, 3 each: the packet identifier, this attempt's token, the digest.
-- Returns per reservation the stored packet when it was published, else the record written
-- (`pending:<token>/<origin>/<digest>`; the origin is the token on a first attempt).
local results = {}
for i = 1, #KEYS do
  local id, token, digest = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local record = redis.call("HGET", KEYS[i], id)
  if record and string.sub(record, 1, 8) ~= "pending:" then
    results[i] = record
  else
    local origin = token
    if record then
      local kept, was = string.match(record, "^pending:[^/]*/([^/]*)/(.*)$")
      if kept and was == digest then origin = kept end
    end
    local mine = "pending:" .. token .. "/" .. origin .. "/" .. digest
    redis.call("HSET", KEYS[i], id, mine)
    results[i] = mine
  end
end
return results
