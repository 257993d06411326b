-- Forward-auth checks as a proxy asks them: X-Forwarded-* of a protected
-- host and the session cookie of a live session drawn at random from
-- TOKENS (one per line). PATH (default /forward-auth) is the route.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local path = os.getenv("PATH_") or "/forward-auth"
local host = os.getenv("HOST_") or "app.bench.test"
local counter = 0
threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  statuses = {}
  math.randomseed(os.time() + counter)
  counter = counter + 1
end
function request()
  local t = tokens[math.random(#tokens)]
  return wrk.format("GET", path, {
    ["Host"] = host,
    ["X-Forwarded-Host"] = host,
    ["X-Forwarded-Proto"] = "http",
    ["X-Forwarded-Method"] = "GET",
    ["X-Forwarded-Uri"] = "/reports?page=" .. math.random(100),
    ["Cookie"] = "authgate_session=" .. t,
  })
end
dofile("loadtest/report.lua")
