-- fence: after a (re)connect, notes the Redis run this zone now lives in; a
-- new run (restart, failover) may have lost writes, so the zone's fence epoch
-- goes up once and every counter skips ahead at its next take.
-- KEYS: zone meta. ARGV: run_id, known_run, epoch_candidate.
-- Reply: {epoch, fence epoch, fenced}.

local zone_meta = KEYS[1]
local run_id, known_run = ARGV[1], ARGV[2]
local candidate = epoch_arg(3)
if type(run_id) ~= 'string' or run_id == '' or #run_id > 64 then
  fail('run_id must be 1 to 64 bytes')
end
if type(known_run) ~= 'string' then
  fail('known_run is missing')
end

local m = redis.call('HMGET', zone_meta, 'epoch', 'run', 'fence')
local run = m[2]
local fence = stored_count(m[3], 'the zone fence') or '0'
if fence == MAX_COUNT then
  fail('the zone fence is at its ceiling')
end

local epoch = ensure_epoch(zone_meta, m[1], candidate)
local fenced = 0
if run ~= run_id then
  redis.call('HSET', zone_meta, 'run', run_id)
  -- First sight anywhere (no run, and this node saw none or this one) is
  -- not fenced; a different run, seen here or by this node, is.
  if run or (known_run ~= '' and known_run ~= run_id) then
    redis.call('HINCRBY', zone_meta, 'fence', 1)
    fence = redis.call('HGET', zone_meta, 'fence')
    fenced = 1
  end
end
return {epoch, fence, fenced}
