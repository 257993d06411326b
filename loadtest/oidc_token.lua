-- The token endpoint's code exchange: each code from CODES (one per line)
-- once, split between the threads; client_secret_basic; the PKCE VERIFIER.
-- Each thread writes the access tokens it gets to OUT.<n>, for
-- oidc_userinfo.lua. Once a thread's codes are spent, it sends the last one
-- again (answered 400: counted, not mistaken for throughput).
local all = {}
for line in io.lines(os.getenv("CODES")) do all[#all + 1] = line end
local auth = "Basic " .. os.getenv("BASIC")
local verifier = os.getenv("VERIFIER")
threads = {}
local n = 0
function setup(thread)
  n = n + 1
  thread:set("id", n)
  thread:set("of", tonumber(os.getenv("THREADS") or "2"))
  table.insert(threads, thread)
end
function init(args)
  statuses = {}
  codes, next_code = {}, 1
  for i = id, #all, of do codes[#codes + 1] = all[i] end
  out = io.open(os.getenv("OUT") .. "." .. id, "w")
end
function request()
  local code = codes[math.min(next_code, #codes)]
  next_code = next_code + 1
  local body = "grant_type=authorization_code&code=" .. code
    .. "&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&code_verifier=" .. verifier
  return wrk.format("POST", "/oauth2/token", {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, body)
end
dofile("loadtest/report.lua")
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local token = status == 200 and string.match(body, '"access_token":"([^"]+)"')
  if token then
    out:write(token, "\n")
    out:flush()
  end
end
