-- wrk script for e2e/bench/translate.sh: POSTs one Anthropic Messages
-- request straight to the test upstream's Anthropic face (the baseline for
-- the translated setup), the same for every request, and prints the same
-- result line as chat.lua. The body is what Sluice sends for chat.lua's
-- request (max_tokens 4096 filled in, the text as a content block).
--
-- Environment:
--   BENCH_STREAM   "1" for a streaming request (default: non-streaming)
--   BENCH_CHUNKS   content chunks the upstream sends (x-mock-chunks), default 5
--   BENCH_MODEL    model name, default bench-model

local stream = os.getenv("BENCH_STREAM") == "1"
local chunks = os.getenv("BENCH_CHUNKS") or "5"
local model = os.getenv("BENCH_MODEL") or "bench-model"

wrk.method = "POST"
wrk.path = "/v1/messages"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-mock-chunks"] = chunks
wrk.headers["x-api-key"] = "sk-upstream-bench"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model":"' .. model .. '","max_tokens":4096,'
  .. '"messages":[{"role":"user","content":[{"type":"text","text":"Say hello"}]}]'
  .. (stream and ',"stream":true' or '') .. '}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d "
      .. "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
