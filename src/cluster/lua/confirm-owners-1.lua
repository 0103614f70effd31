-- Which of a node's connections another node has taken over since; entries Redis lost (a
-- restart without data) are written back, since nobody claimed them.
-- KEYS[1] owners (client id -> "epoch|node|holder")
-- ARGV pairs of client id and the owner entry the node holds for it
-- Returns the client ids owned by another entry now.
local lost = {}
for i = 1, #ARGV, 2 do
  local current = redis.call("HGET", KEYS[1], ARGV[i])
  if not current then
    redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1])
  elseif current ~= ARGV[i + 1] then
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
