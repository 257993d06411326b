#!/usr/bin/env bash
# authgate's hot paths against the ceiling, on the release binary, in one run:
#   loadtest/run.sh
# For 10 thousand and 1 million sessions in SQLite: time from start to ready,
# resident memory (idle, and after the load), the ceiling (GET /health/live),
# the session check by cookie (GET /auth/me) and by raw id
# (GET /api/v1/auth/valid) with tokens drawn at random; then the e-mail code
# surface with a real SMTP server (loadtest/mail_code.sh). Every load phase runs
# DURATION seconds (default 10) on CONNS connections (default 64); server on
# CPU 0, wrk on CPU 1.
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench loadtest/run.sh
# runs it all on PostgreSQL instead (the database, named bench*, is emptied
# for each size).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
SIZES=${SIZES:-"10000 1000000"}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
# BIN=path: measure that binary (another build, for an A/B) instead.
[ -n "${BIN:-}" ] || cargo build --release -q
bin=${BIN:-target/release/authgate}

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }

# wrk → "req/s p50 p99 non-2xx"
load() {
  local script=$1 base=$2 out="$work/wrk.txt"
  shift 2
  env "$@" taskset -c 1 wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "$base" > "$out"
  local rps p50 p99 bad refused
  rps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$out")
  p50=$(awk '/p50_ms/ {print $2}' "$out"); p99=$(awk '/p50_ms/ {print $4}' "$out")
  bad=$(awk '/^status/ && $2 != "200:" {s += $3} END {print s + 0}' "$out")
  refused=$(awk '/^refused/ {print $2}' "$out")
  echo "$rps $p50 $p99 $((bad + ${refused:-0}))"
}

results=()
for size in $SIZES; do
  dir="$work/$size"; mkdir -p "$dir"
  if [ -n "${BENCH_DATABASE_URL:-}" ]; then
    url=$BENCH_DATABASE_URL; target=$url
    loadtest/reset_pg.sh "$url"
  else
    url="sqlite://$dir/authgate.db"; target="$dir/authgate.db"
  fi
  p=$(port)
  cat > "$dir/authgate.toml" <<TOML
[server]
listen = "127.0.0.1:$p"
[database]
url = "$url"
[log]
level = "warn"
TOML
  AUTHGATE_CONFIG="$dir/authgate.toml" $bin migrate > /dev/null
  echo "== seeding $size sessions" >&2
  python3 loadtest/seed_sessions.py "$target" "$size" "$dir/tokens.txt"
  t0=$(now_ms)
  AUTHGATE_CONFIG="$dir/authgate.toml" taskset -c 0 $bin serve > /dev/null 2>&1 & pid=$!
  until curl -sf "http://127.0.0.1:$p/health/ready" > /dev/null; do sleep 0.005; done
  ready=$(( $(now_ms) - t0 ))
  sleep 1
  idle=$(rss_mb "$pid")
  base="http://127.0.0.1:$p"
  echo "== $size sessions: ceiling, cookie check, raw-id check (${DURATION}s each, $CONNS connections)" >&2
  read -r c_rps c_p50 c_p99 c_bad <<< "$(load loadtest/ceiling.lua "$base")"
  read -r k_rps k_p50 k_p99 k_bad <<< "$(load loadtest/session_check.lua "$base" TOKENS="$dir/tokens.txt" MODE=cookie)"
  read -r r_rps r_p50 r_p99 r_bad <<< "$(load loadtest/session_check.lua "$base" TOKENS="$dir/tokens.txt" MODE=raw)"
  loaded=$(rss_mb "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  results+=("$size|$ready|$idle|$loaded|$c_rps|$c_p50/$c_p99|$k_rps|$k_p50/$k_p99|$k_bad|$r_rps|$r_p50/$r_p99|$r_bad")
done

echo
echo "| sessions | start→ready ms | RSS idle / after load MB | ceiling req/s | p50/p99 ms | /auth/me req/s | p50/p99 ms | refused | /api/v1/auth/valid req/s | p50/p99 ms | refused | me / ceiling | valid / ceiling |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
first_k=; first_r=
for r in "${results[@]}"; do
  IFS='|' read -r size ready idle loaded c_rps c_lat k_rps k_lat k_bad r_rps r_lat r_bad <<< "$r"
  printf "| %s | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.2f |\n" \
    "$size" "$ready" "$idle" "$loaded" "$c_rps" "$c_lat" "$k_rps" "$k_lat" "$k_bad" "$r_rps" "$r_lat" "$r_bad" \
    "$(echo "$k_rps / $c_rps" | bc -l)" "$(echo "$r_rps / $c_rps" | bc -l)"
  first_k=${first_k:-$k_rps}; first_r=${first_r:-$r_rps}; last_k=$k_rps; last_r=$r_rps
done
if [ "${#results[@]}" -gt 1 ]; then
  printf "\nslow-down from the smallest to the largest size (throughput ratio): /auth/me %.2f, /api/v1/auth/valid %.2f\n" \
    "$(echo "$first_k / $last_k" | bc -l)" "$(echo "$first_r / $last_r" | bc -l)"
fi

if [ "${SKIP_MAIL:-0}" != 1 ]; then
  echo
  DURATION=$DURATION CONNS=$CONNS loadtest/mail_code.sh
fi
