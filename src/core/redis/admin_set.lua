-- admin_set: moves a counter forward, never back (that would reissue).
-- KEYS: counter, counter meta, zone meta.
-- ARGV: new_count, idle_ms, now, epoch_candidate.
-- Reply: {0, count} when new_count is lower, else {1, count before, g}.

local counter, counter_meta, zone_meta = KEYS[1], KEYS[2], KEYS[3]
local new_count = count_arg(1, 'new_count')
local idle_ms = count_arg(2, 'idle_ms')
local now = count_arg(3, 'now')
local candidate = epoch_arg(4)
if #idle_ms > 15 then
  fail('idle_ms is too large')
end

local epoch, zone_fence = read_zone_meta(zone_meta)
local gen = stored_count(redis.call('HGET', counter_meta, 'g'), 'the counter generation')
local count = stored_count(redis.call('GET', counter), 'the counter') or '0'
if dec_cmp(new_count, count) < 0 then
  return {0, count}
end

ensure_epoch(zone_meta, epoch, candidate)
if not gen then
  gen = new_generation(zone_meta)
  redis.call('HSET', counter_meta, 'g', gen, 'f', zone_fence)
end
redis.call('SET', counter, new_count)
redis.call('HSET', counter_meta, 'u', now)
expire_idle(counter, counter_meta, zone_meta, idle_ms)
return {1, count, gen}
