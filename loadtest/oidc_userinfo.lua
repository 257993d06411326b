-- userinfo with access tokens drawn at random from ACCESS (one per line).
local tokens = {}
for line in io.lines(os.getenv("ACCESS")) do tokens[#tokens + 1] = line end
threads = {}
local counter = 0
function setup(thread) table.insert(threads, thread) end
function init(args)
  statuses = {}
  math.randomseed(os.time() + counter)
  counter = counter + 1
end
function request()
  return wrk.format("GET", "/oauth2/userinfo", { ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)] })
end
dofile("loadtest/report.lua")
