-- take: hands out tickets for a batch of requests on one counter.
-- KEYS: counter, counter meta, zone meta.
-- ARGV: limit, fence, idle_ms, now, epoch_candidate, known_epoch, known_gen,
--       floor, partial, then one count per request in arrival order.
-- Reply: {epoch, g, count before the grants, repaired, fenced, grant...}.
--
-- This script runs for every batch, so it stands alone (no shared prelude)
-- and takes a fast path: counts below 10^15 are exact as Lua numbers, and
-- only larger ones (up to 2^63-1) fall back to decimal-string arithmetic.

local MAX_COUNT = '9223372036854775807'
local MAX_REQUEST = 1000000000
local MAX_REQUESTS = 1024

local function fail(message)
  error(redis.error_reply('ticket: ' .. message))
end

-- Byte-wise comparison of two canonical decimals (never `<` on strings of
-- different lengths, and never the server's locale).
local function cmp(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if #a <= 15 then
    local x, y = tonumber(a), tonumber(b)
    return x < y and -1 or (x > y and 1 or 0)
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y and -1 or 1
    end
  end
  return 0
end

-- A canonical non-negative decimal no larger than 2^63-1 (stored values are
-- checked: an operator's typo is an error, never read as 0).
local function is_count(s)
  if s == '0' then
    return true
  end
  if type(s) ~= 'string' or #s > 19 or not string.find(s, '^[1-9]%d*$') then
    return false
  end
  return #s < 19 or cmp(s, MAX_COUNT) <= 0
end

local function stored(value, what)
  if value and not is_count(value) then
    fail(what .. ' does not hold a count')
  end
  return value
end

local function add(a, b)
  if #a <= 15 and #b <= 15 then
    return string.format('%d', tonumber(a) + tonumber(b))
  end
  local digits, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry
    if i > 0 then
      d = d + string.byte(a, i) - 48
      i = i - 1
    end
    if j > 0 then
      d = d + string.byte(b, j) - 48
      j = j - 1
    end
    carry = d >= 10 and 1 or 0
    digits[#digits + 1] = string.char(48 + d - 10 * carry)
  end
  return string.reverse(table.concat(digits))
end

-- a + b, never past 2^63-1: a count at the ceiling refuses every request.
local function add_capped(a, b)
  local sum = add(a, b)
  if cmp(sum, MAX_COUNT) > 0 then
    return MAX_COUNT
  end
  return sum
end

-- What is left below `limit` as a Lua number, or nil when more than any
-- batch can take (at most 1024 * 10^9 < 10^15).
local function remaining(count, limit)
  if cmp(count, limit) >= 0 then
    return 0
  end
  if #limit <= 15 then
    return tonumber(limit) - tonumber(count)
  end
  if #count <= 15 and #limit >= 17 then
    return nil
  end
  local digits, borrow = {}, 0
  local j = #count
  for i = #limit, 1, -1 do
    local d = string.byte(limit, i) - 48 - borrow
    if j > 0 then
      d = d - (string.byte(count, j) - 48)
      j = j - 1
    end
    borrow = d < 0 and 1 or 0
    digits[#digits + 1] = string.char(48 + d + 10 * borrow)
  end
  local left = string.gsub(string.reverse(table.concat(digits)), '^0+', '')
  if #left <= 15 then
    return tonumber(left) or 0
  end
  return nil
end

local function count_arg(i, name)
  local s = ARGV[i]
  if not is_count(s) then
    fail(name .. ' must be a count')
  end
  return s
end

local counter, counter_meta, zone_meta = KEYS[1], KEYS[2], KEYS[3]
local limit = count_arg(1, 'limit')
local fence = count_arg(2, 'fence')
local idle_ms = count_arg(3, 'idle_ms')
local now = count_arg(4, 'now')
local candidate, known_epoch, known_gen = ARGV[5], ARGV[6], ARGV[7]
local floor = count_arg(8, 'floor')
local partial = ARGV[9]
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
if #ARGV - 9 > MAX_REQUESTS then
  fail('too many requests in one batch')
end
-- One count per request: a batch may carry hundreds, so each is checked
-- with one number conversion.
local counts = {}
for i = 10, #ARGV do
  local n = tonumber(ARGV[i])
  if not n or n < 1 or n > MAX_REQUEST or n % 1 ~= 0 then
    fail('a request count must be 1 to ' .. MAX_REQUEST)
  end
  counts[#counts + 1] = n
end

-- Read and check everything before the first write: a script is not rolled
-- back when it fails half-way.
local zm = redis.call('HMGET', zone_meta, 'epoch', 'fence', 'gen')
local epoch = zm[1]
local zone_fence = stored(zm[2], 'the zone fence') or '0'
if stored(zm[3], 'the zone generation') == MAX_COUNT then
  fail('the zone generation is at its ceiling')
end
local meta = redis.call('HMGET', counter_meta, 'g', 'f', 'u')
local gen = stored(meta[1], 'the counter generation')
local applied = stored(meta[2], 'the counter fence') or '0'
local count = stored(redis.call('GET', counter), 'the counter') or '0'

if not epoch then
  redis.call('HSETNX', zone_meta, 'epoch', candidate)
  epoch = candidate
end
if not gen then
  -- a new life of the counter: the zone's next generation, not fenced
  redis.call('HINCRBY', zone_meta, 'gen', 1)
  gen = redis.call('HGET', zone_meta, 'gen')
  applied = zone_fence
end

-- Never lower than what this node handed out: the counter went back when the
-- zone metadata was lost (new epoch) or within the same life (same gen).
local repaired, fenced = 0, 0
if floor ~= '0' and ((known_epoch ~= '' and known_epoch ~= epoch) or gen == known_gen)
    and cmp(count, floor) < 0 then
  count = add_capped(floor, fence)
  redis.call('SET', counter, count)
  applied = zone_fence
  repaired = 1
elseif cmp(applied, zone_fence) < 0 then
  -- Redis restarted since this counter was last used: it may have lost
  -- writes, so skip ahead once, however many restarts there were.
  if fence ~= '0' then
    count = add_capped(count, fence)
    redis.call('SET', counter, count)
  end
  applied = zone_fence
  fenced = 1
end

local left = remaining(count, limit)
local reply = {epoch, gen, count, repaired, fenced}
local total = 0
for i, wanted in ipairs(counts) do
  local grant = wanted
  if left and wanted > left then
    grant = partial == '1' and left or 0
  end
  if left then
    left = left - grant
  end
  total = total + grant
  reply[5 + i] = grant
end
if total > 0 then
  redis.call('INCRBY', counter, string.format('%d', total))
end
-- The metadata is written when it changes (a busy counter's batches within
-- one second write only the count).
if gen ~= meta[1] or applied ~= meta[2] or now ~= meta[3] then
  redis.call('HSET', counter_meta, 'g', gen, 'f', applied, 'u', now)
end
if idle_ms ~= '0' then
  redis.call('PEXPIRE', counter, idle_ms)
  if counter_meta ~= zone_meta then
    redis.call('PEXPIRE', counter_meta, idle_ms)
  end
end
return reply
