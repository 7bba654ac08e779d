-- wrk script for e2e/bench/mcp.sh: POSTs one MCP JSON-RPC request (a
-- `tools/call`), the same for every request, on an MCP session opened
-- beforehand (by mcp_bench.py), and prints one machine-readable result line
-- when the run ends. Every answer is checked: one without a JSON-RPC
-- `"result"` (an error object, a truncated SSE stream) or with a tool error
-- (`"isError":true`) counts as `bad`.
--
-- Environment:
--   MCP_SESSION   Mcp-Session-Id to send (required)
--   MCP_BODY      the JSON-RPC request (required)
--   MCP_PROTOCOL  MCP-Protocol-Version, default 2025-11-25
--   MCP_API_KEY   client key sent as a bearer token (optional)

local session = os.getenv("MCP_SESSION") or error("MCP_SESSION is not set")
local body = os.getenv("MCP_BODY") or error("MCP_BODY is not set")
local protocol = os.getenv("MCP_PROTOCOL") or "2025-11-25"
local key = os.getenv("MCP_API_KEY") or ""

wrk.method = "POST"
wrk.body = body
wrk.headers["content-type"] = "application/json"
wrk.headers["accept"] = "application/json, text/event-stream"
wrk.headers["mcp-session-id"] = session
wrk.headers["mcp-protocol-version"] = protocol
if key ~= "" then
  wrk.headers["authorization"] = "Bearer " .. key
end

-- Each thread counts its bad answers; done() adds them up.
bad = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"result"', 1, true)
      or string.find(body, '"isError":true', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, thread in ipairs(threads) do
    total_bad = total_bad + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d "
      .. "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d bad=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout, total_bad))
end
