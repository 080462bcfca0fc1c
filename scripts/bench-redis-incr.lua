-- content_by_lua_file of scripts/bench's cluster part: what people run today
-- for one sequence across machines, one Redis INCR per request through
-- lua-resty-redis (Debian: lua-nginx-redis, module "nginx.redis"), over the
-- worker's keep-alive pool of Redis connections.
--
-- nginx.conf sets $bench_redis_port and $bench_redis_key (the counter, set
-- to start - 1 before the run, so INCR answers the ticket).

local redis = require "nginx.redis"

local function fail(what, err)
    ngx.status = 503
    ngx.header["Cache-Control"] = "no-store"
    ngx.say(what, ": ", err)
end

local red = redis:new()
red:set_timeout(1000)
local ok, err = red:connect("127.0.0.1", tonumber(ngx.var.bench_redis_port))
if not ok then
    return fail("redis connect", err)
end

local n
n, err = red:incr(ngx.var.bench_redis_key)
if not n then
    red:close()
    return fail("redis incr", err)
end

-- back into the pool (at most 1024 idle connections per worker, 60 s)
red:set_keepalive(60000, 1024)

local body = n .. "\n"
ngx.header["Cache-Control"] = "no-store"
ngx.header["Content-Length"] = #body
ngx.print(body)
