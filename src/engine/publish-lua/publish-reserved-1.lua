-- An inbound QoS 2 message's PUBLISH, run only while its packet identifier is still reserved
-- by this token (reserve-incoming-1.lua), and marked published in the same step: a PUBLISH that
-- ran is always marked, a `pending:` record always means "not published". ioredis' resend of
-- this script after a failover, or a take-over of the identifier by the client's resend
-- through another connection, publishes nothing twice.
-- KEYS[1] the publisher's session's inbound QoS 2 hash (with the key prefix: the publisher
--   connection has none)
-- ARGV[1] the packet identifier, ARGV[2] the record `pending:<token>/...`, ARGV[3] the channel,
--   ARGV[4] the envelope, ARGV[5] the record of a published message (the packet)
-- Returns 1 if published now, 2 if it was published already, 0 if another connection holds
-- the identifier (or none does): not published.
local record = redis.call("HGET", KEYS[1], ARGV[1])
if record == ARGV[2] then
  redis.call("PUBLISH", ARGV[3], ARGV[4])
  redis.call("HSET", KEYS[1], ARGV[1], ARGV[5])
  return 1
end
if record and string.sub(record, 1, 8) ~= "pending:" then return 2 end
return 0
