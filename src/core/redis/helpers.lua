-- Shared helpers, prepended to every script (Lua has no import in Redis):
-- decimal counts, arguments, and the zone's metadata.
--
-- Ticket counts may reach 2^63-1, beyond what Lua numbers (doubles) hold
-- exactly, so counts stay canonical decimal strings. Below 10^15 they are
-- exact as Lua numbers and take that fast path (`take` runs for every
-- batch); only larger ones use digit-by-digit arithmetic. Request counts
-- and their sums stay far below 2^53.

local MAX_COUNT = '9223372036854775807'
-- A request takes at most this many tickets; 1024 of them sum below 2^53.
local MAX_REQUEST = 1000000000
local MAX_REQUESTS = 1024

local function fail(message)
  error(redis.error_reply('ticket: ' .. message))
end

-- -1, 0 or 1 as a <, = or > b, both canonical decimals: by numbers, never
-- `<` on strings (Lua compares them with the server's locale).
local function dec_cmp(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  local x, y
  if #a <= 15 then
    x, y = tonumber(a), tonumber(b)
  else
    -- the first 15 digits, then the rest (as long in both): each part is
    -- exact as a Lua number
    x, y = tonumber(string.sub(a, 1, 15)), tonumber(string.sub(b, 1, 15))
    if x == y then
      x, y = tonumber(string.sub(a, 16)), tonumber(string.sub(b, 16))
    end
  end
  return x < y and -1 or (x > y and 1 or 0)
end

-- A canonical non-negative decimal no larger than 2^63-1 (stored values are
-- checked: an operator's typo is an error, never read as 0).
local function is_count(s)
  if s == '0' or s == MAX_COUNT then
    return true
  end
  if type(s) ~= 'string' or #s > 19 or not string.find(s, '^[1-9]%d*$') then
    return false
  end
  return #s < 19 or dec_cmp(s, MAX_COUNT) <= 0
end

local function stored_count(value, what)
  if value and not is_count(value) then
    fail(what .. ' does not hold a count')
  end
  return value
end

local function dec_add(a, b)
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

-- a - b, for a >= b.
local function dec_sub(a, b)
  local digits, borrow = {}, 0
  local j = #b
  for i = #a, 1, -1 do
    local d = string.byte(a, i) - 48 - borrow
    if j > 0 then
      d = d - (string.byte(b, j) - 48)
      j = j - 1
    end
    borrow = d < 0 and 1 or 0
    digits[#digits + 1] = string.char(48 + d + 10 * borrow)
  end
  local s = string.gsub(string.reverse(table.concat(digits)), '^0+', '')
  return s == '' and '0' or s
end

-- a + b, never past 2^63-1: a count at the ceiling refuses every request.
local function dec_add_capped(a, b)
  local sum = dec_add(a, b)
  if dec_cmp(sum, MAX_COUNT) > 0 then
    return MAX_COUNT
  end
  return sum
end

-- Fence epochs a counter last fenced at `applied` missed (a counter skips
-- `fence` numbers for each: a run that missed another run's writes may have
-- started from the same stale count). Capped: each skip is one addition.
local MAX_FENCE_SKIPS = 1000

local function fence_epochs_missed(applied, zone_fence)
  if applied == zone_fence then
    return 0
  end
  local order = dec_cmp(applied, zone_fence)
  if order == 0 then
    return 0
  elseif order > 0 then
    -- fenced in a zone metadata that was lost since: skip once
    return 1
  end
  if #zone_fence > 15 then
    return MAX_FENCE_SKIPS
  end
  return math.min(tonumber(zone_fence) - tonumber(applied), MAX_FENCE_SKIPS)
end

-- count + fence * times, never past 2^63-1.
local function dec_add_times(count, fence, times)
  for _ = 1, times do
    count = dec_add_capped(count, fence)
  end
  return count
end

local function count_arg(i, name)
  local s = ARGV[i]
  if not is_count(s) then
    fail(name .. ' must be a count')
  end
  return s
end

local function epoch_arg(i)
  local s = ARGV[i]
  if type(s) ~= 'string' or #s > 64 or not string.find(s, '^%x+$') then
    fail('the epoch candidate must be 1 to 64 hex digits')
  end
  return s
end

-- The zone's epoch, set once; a new epoch tells nodes the metadata was lost.
local function ensure_epoch(zone_meta, epoch, candidate)
  if epoch then
    return epoch
  end
  redis.call('HSETNX', zone_meta, 'epoch', candidate)
  return candidate
end

-- A new life of a counter: the zone's next generation, fenced up to date.
local function new_generation(zone_meta)
  redis.call('HINCRBY', zone_meta, 'gen', 1)
  return redis.call('HGET', zone_meta, 'gen')
end

-- The zone metadata's epoch, fence and generation fields, checked before
-- anything is written: the epoch and the fence epoch.
local function check_zone_meta(epoch, fence, gen)
  gen = stored_count(gen, 'the zone generation')
  if gen and gen == MAX_COUNT then
    fail('the zone generation is at its ceiling')
  end
  return epoch, stored_count(fence, 'the zone fence') or '0'
end

local function read_zone_meta(zone_meta)
  local m = redis.call('HMGET', zone_meta, 'epoch', 'fence', 'gen')
  return check_zone_meta(m[1], m[2], m[3])
end

-- Keys of a counter with `idle=` expire with it (the zone's metadata, which
-- the default counter shares, never does). Without `idle=` a keyed counter's
-- keys lose an expiry an earlier configuration set: left, it would retire a
-- counter in use, which then hands out its numbers again.
local function expire_idle(counter, counter_meta, zone_meta, idle_ms)
  if counter_meta == zone_meta then
    return
  end
  if idle_ms ~= '0' then
    redis.call('PEXPIRE', counter, idle_ms)
    redis.call('PEXPIRE', counter_meta, idle_ms)
  else
    redis.call('PERSIST', counter)
    redis.call('PERSIST', counter_meta)
  end
end
