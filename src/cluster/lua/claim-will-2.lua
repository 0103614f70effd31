-- A survivor asks to publish a will of a node it stopped hearing from. Only if that node's lease
-- is gone: a node that is only cut off from the others' pub/sub (a partition, a slow Redis)
-- still holds its lease and its clients, whose wills are not due [MQTT-3.1.2-8]. And only once
-- across the survivors: the claim expires, so another survivor retries if this one dies.
-- KEYS[1] the lease of the will's node, KEYS[2] the will's claim
-- ARGV[1] the claim's time to live, ms
-- Returns 1 to publish, 0 when the node lives or another survivor claimed the will.
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
if redis.call("SET", KEYS[2], "1", "PX", ARGV[1], "NX") then return 1 end
return 0
