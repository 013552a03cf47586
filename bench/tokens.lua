-- wrk script for bench/run.py: every request acts for a different party.
--
-- Usage: wrk -t2 -c16 -d10s -s bench/tokens.lua http://127.0.0.1:PORT -- REQUESTS_FILE
-- REQUESTS_FILE has one request a line: "GET<TAB>/d/<token>" or
-- "POST<TAB>/d/<token><TAB>urlencoded body". Thread n of N takes lines n, n+N, ...
-- and cycles through them. done() prints one JSON line for run.py to read.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("id", #threads)
end

function init(args)
   local file, count = args[1], 0
   requests = {}
   -- wrk numbers threads from 1 in setup; every thread sees the same total.
   local total = tonumber(args[2]) or 1
   for line in io.lines(file) do
      count = count + 1
      if (count - id) % total == 0 then
         local method, path, body = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
         if method == "POST" then
            requests[#requests + 1] = wrk.format(
               "POST", path,
               { ["Content-Type"] = "application/x-www-form-urlencoded" }, body)
         else
            requests[#requests + 1] = wrk.format("GET", path)
         end
      end
   end
   position = 0
end

function request()
   position = position % #requests + 1
   return requests[position]
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"errors_connect": %d, "errors_read": %d, "errors_write": %d, ' ..
      '"errors_status": %d, "errors_timeout": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
