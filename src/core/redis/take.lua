-- take: hands out tickets for a batch of requests on one counter.
-- KEYS: counter, counter meta, zone meta.
-- ARGV: limit, fence, idle_ms, now, epoch_candidate, known_epoch, known_gen,
--       floor, partial, reserve, then one count per request in arrival order.
-- Reply: {epoch, g, count before the grants, repaired, fenced, grant...},
-- the grants (one per request) only when a request got less than it asked.
--
-- This script runs for every batch: take_fast.lua, before the helpers,
-- serves a busy counter's usual batch; helpers.lua's counts take a fast
-- path below 10^15.
--
-- The reserve: with `appendfsync always` Redis answers only after the fsync
-- of every write a turn made, so a write per batch costs a disk sync per
-- batch. Instead a counter keeps a durable ceiling `r` in its metadata, up to
-- `reserve` past its count, and a batch below it increments the count in
-- memory only (not in the AOF, not to replicas): no sync. A batch that would
-- pass `r` raises it, and that write is synced before anyone is answered. So
-- every ticket answered is at or below a durable `r`; a Redis that restarts
-- or fails over (a new run: the fence epoch moves, see fence.lua) may have
-- lost the count but not `r`, and the count resumes past it.

-- What is left below `limit` as a Lua number, or nil when more than any
-- batch can take (at most 1024 * 10^9 < 10^15).
local function remaining(count, limit)
  if dec_cmp(count, limit) >= 0 then
    return 0
  end
  if #limit <= 15 then
    return tonumber(limit) - tonumber(count)
  end
  if #count <= 15 and #limit >= 17 then
    return nil
  end
  local left = dec_sub(limit, count)
  if #left <= 15 then
    return tonumber(left)
  end
  return nil
end

-- Effects replication, which `redis.set_repl` needs: the default since Redis
-- 5, the only mode since 7 (where this call does nothing).
if redis.replicate_commands then
  redis.replicate_commands()
end

local counter, counter_meta, zone_meta = KEYS[1], KEYS[2], KEYS[3]
local limit = count_arg(1, 'limit')
local fence = count_arg(2, 'fence')
local idle_ms = count_arg(3, 'idle_ms')
local now = count_arg(4, 'now')
local candidate, known_epoch, known_gen = ARGV[5], ARGV[6], ARGV[7]
local floor = count_arg(8, 'floor')
local partial = ARGV[9]
local reserve = count_arg(10, 'reserve')
if #idle_ms > 15 then
  fail('idle_ms is too large')
end
if type(candidate) ~= 'string' or #candidate < 1 or #candidate > 64
    or string.find(candidate, '[^%x]') then
  fail('the epoch candidate must be 1 to 64 hex digits')
end
if known_gen ~= '' and not is_count(known_gen) then
  fail('known_gen must be empty or a count')
end
if partial ~= '0' and partial ~= '1' then
  fail('partial must be 0 or 1')
end
local requests = #ARGV - 10
if requests > MAX_REQUESTS then
  fail('too many requests in one batch')
end

-- Read and check everything before the first write: a script is not rolled
-- back when it fails half-way. The default counter's metadata is the zone's
-- own hash: one read.
local epoch, zone_fence, meta
if counter_meta == zone_meta then
  local m = redis.call('HMGET', zone_meta, 'epoch', 'fence', 'gen', 'g', 'f', 'u', 'r')
  epoch, zone_fence = check_zone_meta(m[1], m[2], m[3])
  meta = {m[4], m[5], m[6], m[7]}
else
  epoch, zone_fence = read_zone_meta(zone_meta)
  meta = redis.call('HMGET', counter_meta, 'g', 'f', 'u', 'r')
end
local gen = stored_count(meta[1], 'the counter generation')
local applied = stored_count(meta[2], 'the counter fence') or '0'
local ceiling = stored_count(meta[4], 'the counter reserve')
local count = stored_count(redis.call('GET', counter), 'the counter') or '0'

-- One count per request: a batch may carry hundreds, and most ask for one
-- ticket, which needs no number conversion.
local counts = {}
for i = 1, requests do
  local asked = ARGV[10 + i]
  local n = 1
  if asked ~= '1' then
    n = tonumber(asked)
    if not n or n < 1 or n > MAX_REQUEST or n % 1 ~= 0 then
      fail('a request count must be 1 to ' .. MAX_REQUEST)
    end
  end
  counts[i] = n
end

epoch = ensure_epoch(zone_meta, epoch, candidate)
if not gen then
  -- a new life of the counter: the zone's next generation, not fenced
  gen = new_generation(zone_meta)
  applied = zone_fence
end

local repaired, fenced = 0, 0
local raised = false
-- Redis restarted or failed over since this counter was last used: it may
-- have lost writes, so skip ahead, once for each fence epoch missed (a
-- restart while nobody used the counter costs one more gap; a failback to a
-- stale former master needs the skip of the run it missed too).
local missed = fence_epochs_missed(applied, zone_fence)
if missed > 0 then
  -- the count in memory may have been lost since: everything up to the
  -- durable ceiling may have been handed out
  if ceiling and dec_cmp(count, ceiling) < 0 then
    count = ceiling
    raised = true
  end
  if fence ~= '0' then
    count = dec_add_times(count, fence, missed)
    raised = true
  end
  applied = zone_fence
  fenced = 1
end
-- Never lower than what this node handed out: the counter went back when the
-- zone metadata was lost (new epoch) or within the same life (same gen).
if floor ~= '0' and ((known_epoch ~= '' and known_epoch ~= epoch) or gen == known_gen)
    and dec_cmp(count, floor) < 0 then
  -- past the durable ceiling too: other nodes may have handed out up to it
  local base = floor
  if ceiling and dec_cmp(ceiling, base) > 0 then
    base = ceiling
  end
  count = dec_add_capped(base, fence)
  raised = true
  repaired = 1
end
if raised then
  redis.call('SET', counter, count)
end

local left = remaining(count, limit)
local reply = {epoch, gen, count, repaired, fenced}
local grants, short = {}, false
local total = 0
for i, wanted in ipairs(counts) do
  local grant = wanted
  if left and wanted > left then
    grant = partial == '1' and left or 0
    short = true
  end
  if left then
    left = left - grant
  end
  total = total + grant
  grants[i] = grant
end
if short then
  for i, grant in ipairs(grants) do
    reply[5 + i] = grant
  end
end
if total > 0 then
  local amount = string.format('%d', total)
  local after = dec_add(count, amount)
  if reserve ~= '0' and not raised and ceiling and dec_cmp(after, ceiling) <= 0 then
    -- below the durable ceiling: in memory only
    redis.set_repl(redis.REPL_NONE)
    redis.call('INCRBY', counter, amount)
    redis.set_repl(redis.REPL_ALL)
  else
    redis.call('INCRBY', counter, amount)
    if reserve ~= '0' then
      -- never past the limit: a counter at it refuses every request anyway
      local top = dec_add_capped(after, reserve)
      if dec_cmp(top, limit) > 0 then
        top = dec_cmp(after, limit) > 0 and after or limit
      end
      redis.call('HSET', counter_meta, 'r', top)
    end
  end
end
-- The metadata is written when it changes (a busy counter's batches within
-- one second write only the count).
if gen ~= meta[1] or applied ~= meta[2] or now ~= meta[3] then
  redis.call('HSET', counter_meta, 'g', gen, 'f', applied, 'u', now)
end
expire_idle(counter, counter_meta, zone_meta, idle_ms)
return reply
