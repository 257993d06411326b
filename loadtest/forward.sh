#!/usr/bin/env bash
# Forward auth under load, on the release binary, in one run:
#   loadtest/forward.sh
# For 10 thousand and 1 million live sessions in SQLite (SIZES): the ceiling
# (GET /health/live) and the forward-auth check (GET /forward-auth, as Caddy
# and Traefik ask it, a random live session each time), authgate on CPU 0
# and wrk on CPU 1; then through the real nginx with the README's recipe
# (docs/forward-auth/nginx.conf, auth_request on every request, the page a
# static file) against the same nginx serving the same file without auth.
# nginx and authgate share CPU 0. DURATION seconds (default 10) per phase on
# CONNS connections (default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
SIZES=${SIZES:-"10000 1000000"}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -n "${BIN:-}" ] || cargo build --release -q
bin=${BIN:-target/release/authgate}

work=$(mktemp -d)
pid= npid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  [ -n "$npid" ] && kill "$npid" 2>/dev/null
  wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wrk → "req/s p50 p99 non-2xx"
load() {
  local script=$1 base=$2 out="$work/wrk.txt"
  shift 2
  env "$@" taskset -c 1 wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "$base" > "$out"
  local rps p50 p99 bad
  rps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$out")
  p50=$(awk '/p50_ms/ {print $2}' "$out"); p99=$(awk '/p50_ms/ {print $4}' "$out")
  bad=$(awk '/^status/ && $2 != "200:" {s += $3} END {print s + 0}' "$out")
  echo "$rps $p50 $p99 $bad"
}

# nginx workers run as nobody: they must read the page.
chmod 755 "$work"
mkdir -p "$work/www"
printf '<!doctype html><title>app</title><p>The application.</p>\n' > "$work/www/index.html"
rows=()
for size in $SIZES; do
  dir="$work/$size"; mkdir -p "$dir"
  p=$(port); np=$(port); sp=$(port)
  cat > "$dir/authgate.toml" <<TOML
[server]
listen = "127.0.0.1:$p"
trusted_proxies = ["127.0.0.1/32"]
[database]
url = "sqlite://$dir/authgate.db"
[log]
level = "warn"
[surfaces]
forward_auth = true
[forward_auth.hosts."app.bench.test"]
allow_domains = ["bench.example"]
TOML
  AUTHGATE_CONFIG="$dir/authgate.toml" $bin migrate > /dev/null
  echo "== seeding $size sessions" >&2
  python3 loadtest/seed_sessions.py "$dir/authgate.db" "$size" "$dir/tokens.txt"
  AUTHGATE_CONFIG="$dir/authgate.toml" taskset -c 0 $bin serve > "$dir/serve.log" 2>&1 & pid=$!
  until curl -sf "http://127.0.0.1:$p/health/ready" > /dev/null; do sleep 0.01; done
  # Every answer must be a 200 with the person (not a 401 or a 302).
  t=$(head -n 1 "$dir/tokens.txt")
  curl -sf -o /dev/null -D - -H "X-Forwarded-Host: app.bench.test" -H "X-Forwarded-Uri: /" \
    -H "Cookie: authgate_session=$t" "http://127.0.0.1:$p/forward-auth" | grep -qi '^x-authgate-user: .\+' \
    || { echo "forward auth does not let a seeded session through" >&2; exit 1; }

  site=$(sed -e "s/127.0.0.1:8080/127.0.0.1:$p/" -e "s/listen 80;/listen 127.0.0.1:$np;/" \
    -e "s/server_name app.example.com;/server_name app.bench.test;/" \
    -e "s|proxy_pass http://app;|root $work/www; try_files /index.html =404;|" \
    -e '/upstream app /d' docs/forward-auth/nginx.conf)
  cat > "$dir/nginx.conf" <<NGINX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  server { listen 127.0.0.1:$sp; location / { root $work/www; try_files /index.html =404; } }
$site
}
NGINX
  taskset -c 0 "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" & npid=$!
  until curl -sf "http://127.0.0.1:$sp/" > /dev/null; do sleep 0.01; done
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: app.bench.test" -H "Cookie: authgate_session=$t" "http://127.0.0.1:$np/")
  [ "$code" = 200 ] || { echo "nginx with forward auth answered $code" >&2; exit 1; }
  sleep 1

  echo "== $size sessions: ceiling, /forward-auth, nginx static, nginx + forward auth" >&2
  read -r c_rps c_p50 c_p99 c_bad <<< "$(load loadtest/ceiling.lua "http://127.0.0.1:$p")"
  read -r f_rps f_p50 f_p99 f_bad <<< "$(load loadtest/forward_check.lua "http://127.0.0.1:$p" TOKENS="$dir/tokens.txt")"
  read -r s_rps s_p50 s_p99 s_bad <<< "$(load loadtest/ceiling.lua "http://127.0.0.1:$sp")"
  read -r n_rps n_p50 n_p99 n_bad <<< "$(load loadtest/forward_check.lua "http://127.0.0.1:$np" TOKENS="$dir/tokens.txt" PATH_=/)"
  kill "$pid" "$npid"; wait 2>/dev/null || true; pid= npid=
  ratio() { echo "scale=2; $1 / $2" | bc -l; }
  rows+=("| $size | GET /health/live (ceiling) | $c_rps | $c_p50/$c_p99 | $c_bad | 1.00 |")
  rows+=("| $size | GET /forward-auth (random live session) | $f_rps | $f_p50/$f_p99 | $f_bad | $(ratio "$f_rps" "$c_rps") of the ceiling |")
  rows+=("| $size | nginx, static file, no auth | $s_rps | $s_p50/$s_p99 | $s_bad | 1.00 |")
  rows+=("| $size | nginx + auth_request to authgate, same file | $n_rps | $n_p50/$n_p99 | $n_bad | $(ratio "$n_rps" "$s_rps") of nginx static |")
done

echo
echo "Forward auth on sqlite, ${DURATION}s per phase, $CONNS connections (authgate and nginx on CPU 0, wrk on CPU 1)"
echo "| sessions | route | req/s | p50/p99 ms | non-200 | ratio |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
