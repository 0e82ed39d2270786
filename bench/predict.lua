-- wrk script: POST one real market window to /predict, report exact percentiles as one JSON line.
-- Usage: wrk -t1 -cN -dXs --latency -s bench/predict.lua http://HOST:PORT/predict -- BODY_FILE [API_KEY]
-- The request is built once per thread (no request() function), so wrk spends no Lua time per request.

function init(args)
  local f = assert(io.open(args[1], "rb"), "cannot open body file " .. tostring(args[1]))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[2] ~= nil and args[2] ~= "" then
    wrk.headers["X-API-Key"] = args[2]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  -- %.0f, not %d: wrk's numbers are Lua doubles and LuaJIT's %d rejects non-integers.
  io.write(string.format(
    'BENCHJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect_errors":%.0f,"read_errors":%.0f,"write_errors":%.0f,"status_errors":%.0f,"timeout_errors":%.0f,' ..
    '"lat_min_us":%.0f,"lat_max_us":%.0f,"lat_mean_us":%.3f,"lat_stdev_us":%.3f,' ..
    '"p50_us":%.0f,"p75_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"p999_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
