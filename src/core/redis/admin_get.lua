-- admin_get: a counter's state, without taking a ticket.
-- KEYS: counter, counter meta.
-- Reply: {exists, count or '', g or '', u or ''}.

local v = stored_count(redis.call('GET', KEYS[1]), 'the counter')
local meta = redis.call('HMGET', KEYS[2], 'g', 'u')
local gen = stored_count(meta[1], 'the counter generation')
local used = stored_count(meta[2], 'the counter last use')
local exists = (v or gen) and 1 or 0
return {exists, v or '', gen or '', used or ''}
