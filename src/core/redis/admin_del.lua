-- admin_del: retires a counter; its next take starts a new life (a new
-- generation), which nodes read as "retired", not "data lost".
-- KEYS: counter, counter meta, zone meta. Reply: 1 if it existed, else 0.

local counter, counter_meta, zone_meta = KEYS[1], KEYS[2], KEYS[3]
local existed
if counter_meta == zone_meta then
  -- The default counter keeps its fields in the zone's hash: drop only those.
  existed = redis.call('DEL', counter) + redis.call('HDEL', zone_meta, 'g', 'f', 'u', 'r')
else
  existed = redis.call('DEL', counter, counter_meta)
end
return existed > 0 and 1 or 0
