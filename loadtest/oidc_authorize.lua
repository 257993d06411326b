-- The authorization endpoint for signed-in people (prompt=none): a session
-- cookie drawn at random from TOKENS, PKCE S256 with CHALLENGE. Each thread
-- writes the codes it gets to OUT.<n>, for oidc_token.lua. A 303 with a
-- code counts as success (reported as 200).
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local path = "/oauth2/authorize?client_id=bench&response_type=code&scope=openid%20email"
  .. "&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&prompt=none&state=s"
  .. "&code_challenge=" .. os.getenv("CHALLENGE") .. "&code_challenge_method=S256"
threads = {}
local n = 0
function setup(thread)
  n = n + 1
  thread:set("id", n)
  table.insert(threads, thread)
end
function init(args)
  statuses = {}
  math.randomseed(os.time() + id)
  out = io.open(os.getenv("OUT") .. "." .. id, "w")
end
function request()
  return wrk.format("GET", path, { ["Cookie"] = "authgate_session=" .. tokens[math.random(#tokens)] })
end
dofile("loadtest/report.lua")
function response(status, headers, body)
  local code = string.match(headers["location"] or headers["Location"] or "", "[?&]code=([^&]+)")
  if status == 303 and code then
    statuses[200] = (statuses[200] or 0) + 1
    out:write(code, "\n")
    out:flush()
  else
    statuses[status] = (statuses[status] or 0) + 1
  end
end
