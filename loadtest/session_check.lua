-- Session checks with tokens drawn at random from TOKENS (one per line):
-- MODE=cookie: GET /auth/me with the connect.sid cookie;
-- MODE=raw:    GET /api/v1/auth/valid with the id raw in Authorization.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local mode = os.getenv("MODE") or "cookie"
local counter = 0
threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  invalid = 0
  math.randomseed(os.time() + counter)
  counter = counter + 1
end

function request()
  local t = tokens[math.random(#tokens)]
  if mode == "raw" then
    return wrk.format("GET", "/api/v1/auth/valid", { ["Authorization"] = t })
  end
  return wrk.format("GET", "/auth/me", { ["Cookie"] = "connect.sid=" .. t })
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if mode == "raw" and status == 200 and not string.find(body, "true", 1, true) then
    invalid = invalid + 1
  end
end

function done(summary, latency, requests)
  local total, bad = {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
    bad = bad + (t:get("invalid") or 0)
  end
  for k, v in pairs(total) do io.write(string.format("status %d: %d\n", k, v)) end
  io.write(string.format("refused %d\n", bad))
  io.write(string.format("p50_ms %.2f p99_ms %.2f\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
