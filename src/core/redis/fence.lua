-- fence: after a (re)connect, notes the Redis run this zone now lives in; a
-- new run (restart, failover) may have lost writes, so the zone's fence epoch
-- goes up once and every counter skips ahead at its next take.
-- KEYS: zone meta. ARGV: run_id, known_run, epoch_candidate, known_fence.
-- Reply: {epoch, fence epoch, fenced}.

local zone_meta = KEYS[1]
local run_id, known_run = ARGV[1], ARGV[2]
local candidate = epoch_arg(3)
local known_fence = count_arg(4, 'known_fence')
if type(run_id) ~= 'string' or run_id == '' or #run_id > 64 then
  fail('run_id must be 1 to 64 bytes')
end
if type(known_run) ~= 'string' then
  fail('known_run is missing')
end

local m = redis.call('HMGET', zone_meta, 'epoch', 'run', 'fence')
local run = m[2]
local fence = stored_count(m[3], 'the zone fence') or '0'
if fence == MAX_COUNT or known_fence == MAX_COUNT then
  fail('the zone fence is at its ceiling')
end

local epoch = ensure_epoch(zone_meta, m[1], candidate)
-- This node last served this zone from another run.
local elsewhere = known_run ~= '' and known_run ~= run_id
local fenced = 0
-- Fenced: metadata last written in another run (a restart or failover; the
-- first node to see it fences for all), or metadata that is gone or has not
-- moved past the fence this node saw elsewhere: a copy that missed that
-- run's writes (a failback to a former master that never restarted keeps
-- its own run_id, and its stale metadata names it).
if (run and run ~= run_id)
    or (elsewhere and (not run or dec_cmp(fence, known_fence) <= 0)) then
  -- past every fence epoch seen, here or by this node
  if dec_cmp(known_fence, fence) > 0 then
    fence = known_fence
  end
  fence = dec_add(fence, '1')
  redis.call('HSET', zone_meta, 'run', run_id, 'fence', fence)
  fenced = 1
elseif run ~= run_id then
  redis.call('HSET', zone_meta, 'run', run_id)
end
return {epoch, fence, fenced}
