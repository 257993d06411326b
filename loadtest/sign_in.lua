-- wrk: POST /auth/sign-in-by-mail-code with prepared (token, code) pairs,
-- each used once. A thread whose share is used up stops (so Requests/sec
-- counts sign-ins only); the few requests it had in flight may answer 410,
-- which the report shows.
threads = {}
local pairs_file = os.getenv("PAIRS") or "pairs.txt"

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  mine = {}
  local n = tonumber(os.getenv("THREADS") or "1")
  local i = 0
  for line in io.lines(pairs_file) do
    if i % n == id then table.insert(mine, line) end
    i = i + 1
  end
  next_i = 1
end

function request()
  local line = mine[next_i]
  if line == nil then
    line = "exhausted-exhausted-exhausted-00 x"
  else
    next_i = next_i + 1
  end
  local token, code = line:match("^(%S+) (.+)$")
  local body = string.format('{"mailLoginToken":"%s","receivedCode":"%s"}', token, code)
  return wrk.format("POST", "/auth/sign-in-by-mail-code", {["Content-Type"] = "application/json"}, body)
end

dofile("loadtest/report.lua")

local count_status = response
function response(status, headers, body)
  count_status(status, headers, body)
  if next_i > #mine then wrk.thread:stop() end
end
