-- The ceiling: the cheapest route of the same binary (any GET /health/live;
-- on nginx, its static file).
threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function request() return wrk.format("GET", "/health/live") end
dofile("loadtest/report.lua")
