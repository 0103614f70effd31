-- A PUBREC arrived: the delivery sent with this packet identifier moves to the end of the
-- queue as a PUBREL (`rel:<ref>`), its packet replaced by the PUBREL. Only a delivery the queue
-- still holds: one the cap dropped while it was in flight is not written back. A shared
-- subscription's delivery (ref `$share/<origin>:0`, never in the queue: its group's queue holds
-- it) gets its PUBREL added, resent when the session resumes [MQTT-4.4.0-1], and its ref noted
-- in the session's released list: should the group's acknowledgement fail, the entry is not sent
-- to the session again, from whichever node it joins (the group's keys are in another slot on a
-- Cluster, so the acknowledgement cannot be written here). An inbound QoS 2 message's origin is
-- noted in the same list (`@<origin>`): a resumed session, on whichever node, skips the
-- message's later attempts after its PUBREL is gone with the PUBCOMP (attempt-deliveries.ts).
-- KEYS[1] the session's queue, KEYS[2] its packets, KEYS[3] its packet identifiers (id ->
--   queue entry), KEYS[4] its released list (shared refs and `@<origin>`, newest first)
-- ARGV[1] the packet identifier, ARGV[2] the PUBREL packet, ARGV[3] the released list's cap
-- Returns 1 if the queue held the delivery, else 0 (also when already released).
local ref = redis.call("HGET", KEYS[3], ARGV[1])
if not ref or string.sub(ref, 1, 4) == "rel:" then return 0 end
local shared = string.sub(ref, 1, 7) == "$share/"
if redis.call("LREM", KEYS[1], 0, ref) == 0 and not shared then return 0 end
redis.call("RPUSH", KEYS[1], "rel:" .. ref)
local pubrel = ARGV[2]
-- An inbound QoS 2 message's origin stays with its PUBREL: a session resumed with it skips
-- later attempts of the message (attempt-deliveries.ts). The queued packet (msgpack-lite) has
-- it as its last field, a short string, read from the bytes: cmsgpack reads no bin field, and
-- every packet's payload is one. A payload cannot pass for it: the origin ends the packet.
local packet = redis.call("HGET", KEYS[2], ref)
local origin
if packet then
  local key = "\166origin"
  local at
  local from = 1
  while true do
    local found = string.find(packet, key, from, true)
    if not found then break end
    at, from = found, found + 1
  end
  if at then
    local head = string.byte(packet, at + 7)
    local length, start
    if head and head >= 0xa0 and head <= 0xbf then
      length, start = head - 0xa0, at + 8
    elseif head == 0xd9 then
      length, start = string.byte(packet, at + 8), at + 9
    end
    if length and start + length - 1 == #packet then
      origin = string.sub(packet, start, start + length - 1)
    end
  end
end
if origin then
  pubrel = cmsgpack.pack({ cmd = "pubrel", messageId = tonumber(ARGV[1]), origin = origin })
end
redis.call("HSET", KEYS[2], ref, pubrel)
redis.call("HSET", KEYS[3], ARGV[1], "rel:" .. ref)
if shared then redis.call("LPUSH", KEYS[4], ref) end
if origin then redis.call("LPUSH", KEYS[4], "@" .. origin) end
if shared or origin then redis.call("LTRIM", KEYS[4], 0, tonumber(ARGV[3]) - 1) end
return 1
