-- wrk script for e2e/bench/run.sh: POSTs one chat completion request, the
-- same for every request (a static request keeps wrk itself cheap), and
-- prints one machine-readable result line when the run ends.
--
-- Environment:
--   BENCH_STREAM   "1" for a streaming request (default: non-streaming)
--   BENCH_CHUNKS   content chunks the upstream sends (x-mock-chunks), default 5
--   BENCH_API_KEY  client key sent as a bearer token (optional)
--   BENCH_MODEL    model name, default bench-model

local stream = os.getenv("BENCH_STREAM") == "1"
local chunks = os.getenv("BENCH_CHUNKS") or "5"
local key = os.getenv("BENCH_API_KEY") or ""
local model = os.getenv("BENCH_MODEL") or "bench-model"

wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-mock-chunks"] = chunks
if key ~= "" then
  wrk.headers["authorization"] = "Bearer " .. key
end
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello"}],'
  .. '"stream":' .. (stream and "true" or "false") .. '}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d "
      .. "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
