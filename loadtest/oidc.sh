#!/usr/bin/env bash
# authgate as an OpenID Provider under load, on the release binary, against
# the ceiling of the same binary in the same run:
#   loadtest/oidc.sh
# SESSIONS (default 10000) live sessions are seeded; then, each for DURATION
# seconds (default 10) on CONNS connections (default 64), server on CPU 0 and
# wrk on CPU 1: the ceiling (GET /health/live); the authorization endpoint
# for signed-in people (prompt=none, a random session: one grant and code
# written each); the code exchange at the token endpoint (each code once,
# PKCE, client_secret_basic, an RS256 ID token signed each); userinfo with
# the access tokens it gave (all of them, then the first thousand, asked
# again and again: the cached case).
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench loadtest/oidc.sh
# runs it on PostgreSQL instead (the database, named bench*, is emptied).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
SESSIONS=${SESSIONS:-10000}
# ALG=ES256 or EdDSA: sign the ID tokens with that instead of RS256.
ALG=${ALG:-RS256}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ -n "${BIN:-}" ] || cargo build --release -q
bin=${BIN:-target/release/authgate}

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# wrk → "req/s-of-successes p50 p99 failures"
load() {
  local script=$1 out="$work/wrk.txt"
  shift
  env "$@" taskset -c 1 wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$p" > "$out"
  local ok p50 p99 bad
  ok=$(awk '/^status 200:/ {print $3}' "$out")
  p50=$(awk '/p50_ms/ {print $2}' "$out"); p99=$(awk '/p50_ms/ {print $4}' "$out")
  bad=$(awk '/^status/ && $2 != "200:" {s += $3} END {print s + 0}' "$out")
  echo "$(( ${ok:-0} / DURATION )) $p50 $p99 $bad"
}

if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  url=$BENCH_DATABASE_URL; target=$url
  loadtest/reset_pg.sh "$url"
  backend=postgres
else
  url="sqlite://$work/authgate.db"; target="$work/authgate.db"
  backend=sqlite
fi
secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
verifier=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
challenge=$(python3 -c "import base64, hashlib; print(base64.urlsafe_b64encode(hashlib.sha256(b'$verifier').digest()).decode().rstrip('='))")
basic=$(printf 'bench:%s' "$secret" | base64 -w0)
cat > "$work/authgate.toml" <<TOML
[server]
listen = "127.0.0.1:$p"
[database]
url = "$url"
[log]
level = "warn"
[vault]
keys = ["$($bin vault key)"]
[oidc]
code_ttl_secs = 600
signing_alg = "$ALG"
[clients.bench]
client_secret = "$secret"
redirect_uris = ["http://127.0.0.1:9/cb"]
access_token_ttl_secs = 3600
TOML
AUTHGATE_CONFIG="$work/authgate.toml" $bin migrate > /dev/null
echo "== seeding $SESSIONS sessions ($backend)" >&2
python3 loadtest/seed_sessions.py "$target" "$SESSIONS" "$work/tokens.txt"
AUTHGATE_CONFIG="$work/authgate.toml" taskset -c 0 $bin serve > "$work/serve.log" 2>&1 & pid=$!
until curl -sf "http://127.0.0.1:$p/health/ready" > /dev/null; do sleep 0.005; done
# The first signing key is made at the first use: not inside a measurement.
curl -sf "http://127.0.0.1:$p/oauth2/jwks" > /dev/null
sleep 1

echo "== ceiling, authorize, code exchange, userinfo (${DURATION}s each, $CONNS connections)" >&2
read -r c_rps c_p50 c_p99 c_bad <<< "$(load loadtest/ceiling.lua)"
read -r a_rps a_p50 a_p99 a_bad <<< "$(load loadtest/oidc_authorize.lua TOKENS="$work/tokens.txt" CHALLENGE="$challenge" OUT="$work/codes")"
cat "$work"/codes.* > "$work/codes.txt"
codes=$(wc -l < "$work/codes.txt")
read -r t_rps t_p50 t_p99 t_bad <<< "$(load loadtest/oidc_token.lua CODES="$work/codes.txt" BASIC="$basic" VERIFIER="$verifier" OUT="$work/access" THREADS=2)"
cat "$work"/access.* > "$work/access.txt"
read -r u_rps u_p50 u_p99 u_bad <<< "$(load loadtest/oidc_userinfo.lua ACCESS="$work/access.txt")"
# A thousand people whose applications ask on every request (each token
# again within the cache's few seconds).
head -n 1000 "$work/access.txt" > "$work/hot.txt"
read -r h_rps h_p50 h_p99 h_bad <<< "$(load loadtest/oidc_userinfo.lua ACCESS="$work/hot.txt")"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

echo
echo "OpenID provider on $backend, $SESSIONS sessions, ID tokens $ALG, $codes codes made by the authorize phase"
echo "| route | req/s | p50/p99 ms | failures | / ceiling |"
echo "|---|---|---|---|---|"
row() { printf "| %s | %s | %s/%s | %s | %.2f |\n" "$1" "$2" "$3" "$4" "$5" "$(echo "$2 / $c_rps" | bc -l)"; }
row "GET /health/live (ceiling)" "$c_rps" "$c_p50" "$c_p99" "$c_bad"
row "GET /oauth2/authorize (prompt=none, session)" "$a_rps" "$a_p50" "$a_p99" "$a_bad"
row "POST /oauth2/token (code exchange, $ALG)" "$t_rps" "$t_p50" "$t_p99" "$t_bad"
row "GET /oauth2/userinfo (every token, mostly first asks)" "$u_rps" "$u_p50" "$u_p99" "$u_bad"
row "GET /oauth2/userinfo (1,000 tokens asked again and again)" "$h_rps" "$h_p50" "$h_p99" "$h_bad"
echo "(token failures: requests after the codes ran out, answered invalid_grant)"
