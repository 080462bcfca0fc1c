-- Helpers of the scripts that read and write a zone's metadata (fence and
-- the admin scripts), after decimal.lua.

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

-- The zone metadata, checked before anything is written.
local function read_zone_meta(zone_meta)
  local m = redis.call('HMGET', zone_meta, 'epoch', 'fence', 'gen')
  local gen = stored_count(m[3], 'the zone generation')
  if gen and gen == MAX_COUNT then
    fail('the zone generation is at its ceiling')
  end
  return m[1], stored_count(m[2], 'the zone fence') or '0'
end

