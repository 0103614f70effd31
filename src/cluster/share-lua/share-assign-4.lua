-- Assigns a message of a shared group to one online member: the proposed one if its node is
-- alive and its queue has room, else the least loaded such member, else the group's backlog.
-- KEYS: [1] groups (hash: group id -> name), [2] the group's members (hash: client id -> token
--   `<node>|<connection>|<persistent>`), [3] the group's backlog (stream), [4] the publisher's
--   inbound QoS 2 hash when ARGV[8] is given, else KEYS[1] again
-- ARGV: [1] group id, [2] proposed member or "", [3] the message, [4] "1" to keep it in the
--   member's queue until acknowledged (QoS 1/2), "0" not (QoS 0), [5] cap of a queue and of the
--   backlog, [6] node lease key prefix, [7] member queue key prefix (member id appended)
--   [8] to [10], only for an inbound QoS 2 message whose packet identifier is reserved
--   (engine/inbound-qos2.ts): the identifier, the field listing the groups it was assigned in
--   (`,<group id>,...`), and the caller's reservation record (`pending:<token>`). A take-over
--   publishes such a message again, so it is assigned once per group whichever connection
--   publishes it; not while another connection's reservation holds the identifier, nor once the
--   identifier is released (a call held up in a failover, arriving late).
-- An entry's origin names the message wherever it moves: `<entry id>.<sha1 of the queue's owner,
-- 8 hex>` ("" for the backlog) of its first entry, kept in field "o" of the entries it moves to.
-- Returns {"member", id, token, entry id or "", origin or ""}, {"backlog"}, {"dropped", reason},
--   or {"none"}.
if redis.call("HEXISTS", KEYS[1], ARGV[1]) == 0 then return {"none"} end
if ARGV[8] then
  local record = redis.call("HGET", KEYS[4], ARGV[8])
  if not record then return {"none"} end
  if record ~= ARGV[10] and string.sub(record, 1, 8) == "pending:" then return {"none"} end
  local groups = redis.call("HGET", KEYS[4], ARGV[9]) or ","
  if string.find(groups, "," .. ARGV[1] .. ",", 1, true) then return {"none"} end
  redis.call("HSET", KEYS[4], ARGV[9], groups .. ARGV[1] .. ",")
end
local cap = tonumber(ARGV[5])
local keep = ARGV[4] == "1"
local function alive(token)
  local node = string.match(token, "^([^|]+)|")
  return node ~= nil and redis.call("EXISTS", ARGV[6] .. node) == 1
end
local function load(member)
  if not keep then return 0 end
  return redis.call("XLEN", ARGV[7] .. member)
end
local chosen, token
if ARGV[2] ~= "" then
  local t = redis.call("HGET", KEYS[2], ARGV[2])
  if t and alive(t) and load(ARGV[2]) < cap then chosen, token = ARGV[2], t end
end
local online = chosen ~= nil
if not chosen then
  local members = redis.call("HGETALL", KEYS[2])
  local least = cap
  for i = 1, #members, 2 do
    if alive(members[i + 1]) then
      online = true
      local size = load(members[i])
      if size < least then least, chosen, token = size, members[i], members[i + 1] end
    end
  end
end
if chosen then
  if not keep then return {"member", chosen, token, "", ""} end
  local id = redis.call("XADD", ARGV[7] .. chosen, "*", "m", ARGV[3])
  return {"member", chosen, token, id, id .. "." .. string.sub(redis.sha1hex(chosen), 1, 8)}
end
if online then return {"dropped", "queue_full"} end
if redis.call("XLEN", KEYS[3]) >= cap then return {"dropped", "backlog_full"} end
redis.call("XADD", KEYS[3], "*", "m", ARGV[3])
return {"backlog"}
