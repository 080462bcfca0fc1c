-- wrk script for scripts/bench.
--
-- Always: done() prints one line "BENCH {json}" with the run's totals and
-- latency percentiles (microseconds), so scripts/bench.py need not scrape
-- wrk's human-readable report.
--
-- With BENCH_KEYS=N in the environment: every request carries ?k=K, K cycling
-- through 1..N (each thread starts at a different place in the cycle), for
-- `ticket_counter key=$arg_k`. The N request strings are built once per
-- thread in init(), so request() only indexes a table.
-- Without it no request() is defined and wrk keeps its static fast path.

local nkeys = tonumber(os.getenv("BENCH_KEYS") or "")

if nkeys and nkeys > 0 then
   local threads = 0

   function setup(thread)
      thread:set("thread_index", threads)
      threads = threads + 1
   end

   local reqs, i

   function init(args)
      reqs = {}
      for k = 1, nkeys do
         reqs[k] = wrk.format(nil, wrk.path .. "?k=" .. k)
      end
      -- thread 0 starts at key 1, thread 1 half way round, ...
      i = ((thread_index or 0) * math.floor(nkeys / 2)) % nkeys
   end

   function request()
      i = i % nkeys + 1
      return reqs[i]
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
