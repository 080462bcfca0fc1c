-- take's fast path: a busy counter's usual batch. It comes before the
-- helpers because Redis runs a script's whole text at every call, and
-- defining the helpers costs as much as a third of this path.
--
-- It serves a batch only when the count is all that changes: the zone and
-- the counter are as the node knows them (same epoch, same generation, no
-- fence epoch missed, metadata touched this second), no idle expiry, the
-- counter's durable ceiling covers the batch, every request gets what it
-- asked, and every number is a canonical decimal below 10^15. Anything
-- else, odd values included, falls through to the full script, which
-- decides and says what is wrong. Arguments this path does not use (the
-- fence, the epoch candidate) are checked there only.
do
  -- a canonical decimal below 10^15, so exact as a Lua number
  local function small(s)
    return #s <= 15 and (s == '0' or string.find(s, '^[1-9]%d*$') ~= nil)
  end
  local known_epoch, known_gen, partial = ARGV[6], ARGV[7], ARGV[9]
  local keyed = KEYS[2] ~= KEYS[3]
  if ARGV[10] ~= '0' and ARGV[3] == '0' and known_epoch ~= '' and known_gen ~= ''
      and (partial == '0' or partial == '1') and #ARGV > 10 and #ARGV <= 1034 then
    local epoch, zone_fence, gen, applied, used, ceiling
    if keyed then
      local z = redis.call('HMGET', KEYS[3], 'epoch', 'fence')
      local m = redis.call('HMGET', KEYS[2], 'g', 'f', 'u', 'r')
      epoch, zone_fence, gen, applied, used, ceiling = z[1], z[2], m[1], m[2], m[3], m[4]
    else
      local m = redis.call('HMGET', KEYS[3], 'epoch', 'fence', 'g', 'f', 'u', 'r')
      epoch, zone_fence, gen, applied, used, ceiling = m[1], m[2], m[3], m[4], m[5], m[6]
    end
    -- (HMGET answers false for a missing field)
    if epoch == known_epoch and gen == known_gen and applied == (zone_fence or '0')
        and used == ARGV[4] and ceiling then
      local count = redis.call('GET', KEYS[1]) or '0'
      local limit, floor = ARGV[1], ARGV[8]
      if small(count) and small(ceiling) and small(floor) and #limit <= 19
          and string.find(limit, '^[1-9]%d*$') then
        local total = 0
        for i = 11, #ARGV do
          local asked = ARGV[i]
          if asked == '1' then
            total = total + 1
          else
            local k = tonumber(asked)
            if not k or k < 1 or k > 1000000000 or k % 1 ~= 0 then
              total = nil
              break
            end
            total = total + k
          end
        end
        local n = tonumber(count)
        local after = total and n + total
        -- not below the node's own last ticket (the full script repairs
        -- that), within the ceiling, within the limit (a 16-digit limit is
        -- past any 15-digit ceiling)
        if after and n >= tonumber(floor) and after <= tonumber(ceiling)
            and (#limit > 15 or after <= tonumber(limit)) then
          if redis.replicate_commands then
            redis.replicate_commands()
          end
          -- below the durable ceiling: in memory only (see take.lua)
          redis.set_repl(redis.REPL_NONE)
          redis.call('INCRBY', KEYS[1], string.format('%d', total))
          redis.set_repl(redis.REPL_ALL)
          if keyed then
            -- what expire_idle does without `idle=`: no-ops unless an
            -- earlier configuration left an expiry
            redis.call('PERSIST', KEYS[1])
            redis.call('PERSIST', KEYS[2])
          end
          -- every request got what it asked: no grants listed
          return {epoch, gen, count, 0, 0}
        end
      end
    end
  end
end
