-- take: hands out tickets for a batch of requests on one counter.
-- KEYS: counter, counter meta, zone meta.
-- ARGV: limit, fence, idle_ms, now, epoch_candidate, known_epoch, known_gen,
--       floor, partial, then one count per request in arrival order.
-- Reply: {epoch, g, count before the grants, repaired, fenced, grant...}.

local counter, counter_meta, zone_meta = KEYS[1], KEYS[2], KEYS[3]
local limit = count_arg(1, 'limit')
local fence = count_arg(2, 'fence')
local idle_ms = count_arg(3, 'idle_ms')
local now = count_arg(4, 'now')
local candidate = epoch_arg(5)
local known_epoch = ARGV[6]
local known_gen = ARGV[7]
local floor = count_arg(8, 'floor')
local partial = ARGV[9]
if known_gen ~= '' and not is_count(known_gen) then
  fail('known_gen must be empty or a count')
end
if partial ~= '0' and partial ~= '1' then
  fail('partial must be 0 or 1')
end
if #idle_ms > 15 then
  fail('idle_ms is too large')
end
if #ARGV - 9 > MAX_REQUESTS then
  fail('too many requests in one batch')
end
local counts = {}
for i = 10, #ARGV do
  local s = ARGV[i]
  if not is_count(s) or #s > 10 or tonumber(s) < 1 or tonumber(s) > MAX_REQUEST then
    fail('a request count must be 1 to ' .. MAX_REQUEST)
  end
  counts[#counts + 1] = tonumber(s)
end

-- Read and check everything before the first write: a script is not rolled
-- back when it fails half-way.
local epoch, zone_fence = read_zone_meta(zone_meta)
local meta = redis.call('HMGET', counter_meta, 'g', 'f')
local gen = stored_count(meta[1], 'the counter generation')
local applied = stored_count(meta[2], 'the counter fence') or '0'
local count = stored_count(redis.call('GET', counter), 'the counter') or '0'

epoch = ensure_epoch(zone_meta, epoch, candidate)
if not gen then
  gen = new_generation(zone_meta)
  applied = zone_fence
end

-- Never lower than what this node handed out: the counter went back when the
-- zone metadata was lost (new epoch) or within the same life (same gen).
local repaired, fenced = 0, 0
if floor ~= '0' and ((known_epoch ~= '' and known_epoch ~= epoch) or gen == known_gen)
    and dec_cmp(count, floor) < 0 then
  count = dec_add_capped(floor, fence)
  redis.call('SET', counter, count)
  applied = zone_fence
  repaired = 1
elseif dec_cmp(applied, zone_fence) < 0 then
  -- Redis restarted since this counter was last used: it may have lost
  -- writes, so skip ahead once, however many restarts there were.
  if fence ~= '0' then
    count = dec_add_capped(count, fence)
    redis.call('SET', counter, count)
  end
  applied = zone_fence
  fenced = 1
end

-- Remaining tickets as a Lua number, or nil when more than any batch takes.
local remaining = 0
if dec_cmp(count, limit) < 0 then
  local left = dec_sub(limit, count)
  remaining = #left <= 15 and tonumber(left) or nil
end
local reply = {epoch, gen, count, repaired, fenced}
local total = 0
for i, wanted in ipairs(counts) do
  local grant = wanted
  if remaining and wanted > remaining then
    grant = partial == '1' and remaining or 0
  end
  if remaining then
    remaining = remaining - grant
  end
  total = total + grant
  reply[5 + i] = grant
end
if total > 0 then
  redis.call('INCRBY', counter, string.format('%d', total))
end
redis.call('HSET', counter_meta, 'g', gen, 'f', applied, 'u', now)
if idle_ms ~= '0' then
  redis.call('PEXPIRE', counter, idle_ms)
  if counter_meta ~= zone_meta then
    redis.call('PEXPIRE', counter_meta, idle_ms)
  end
end
return reply
