-- wrk: POST /auth/sign-in-by-mail-code with prepared (token, code) pairs,
-- each used once. Run it shorter than the pairs last: once a thread's share
-- is used up it sends an unknown token (410), which the report shows.
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

dofile("bench/report.lua")
