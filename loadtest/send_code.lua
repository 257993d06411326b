-- wrk: POST /auth/send-mail-login-code-v2 with a new address per request,
-- counting answers by status.
local counter = 0
threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function request()
  counter = counter + 1
  local body = string.format('{"mail":"b%d-%d@bench.example","locale":"en"}', id, counter)
  return wrk.format("POST", "/auth/send-mail-login-code-v2", {["Content-Type"] = "application/json"}, body)
end

dofile("loadtest/report.lua")
