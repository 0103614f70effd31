-- Removes filters from a session; the last one gone, its queue, packets and packet identifiers
-- go with it.
-- KEYS[1] the session's subscriptions (hash: filter -> subscription), KEYS[2] its queue,
-- KEYS[3] its packets, KEYS[4] its packet identifiers
-- ARGV the filters
-- Returns 1 if the session has no subscription left, else 0.
redis.call("HDEL", KEYS[1], unpack(ARGV))
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("DEL", KEYS[2], KEYS[3], KEYS[4])
return 1
