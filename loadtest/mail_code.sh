#!/usr/bin/env bash
# Throughput of the e-mail code surface against the release binary, with a
# real SMTP server (aiosmtpd) receiving every mail. Bounded: each load phase
# runs at most DURATION seconds (sign-in stops when its logins are used up).
#
#   loadtest/mail_code.sh                       # SQLite
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench loadtest/mail_code.sh
#   (the database, named bench*, is emptied first)
#
# Server on CPU 0; load generator and SMTP server (the peers) on CPU 1 (taskset).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
LOGINS=${LOGINS:-20000}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install -q 'aiosmtpd==1.4.6'
# BIN=path: measure that binary (another build, for an A/B) instead.
[ -n "${BIN:-}" ] || cargo build --release -q

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SMTP_PORT=$(port); APP_PORT=$(port)
touch "$work/mails.txt"
taskset -c 1 python3 loadtest/smtp_sink.py "$SMTP_PORT" "$work/mails.txt" & pids+=($!)

cat > "$work/authgate.toml" <<TOML
[server]
listen = "127.0.0.1:$APP_PORT"
[database]
url = "${BENCH_DATABASE_URL:-sqlite://$work/authgate.db}"
max_connections = ${BENCH_DB_CONNS:-16}
[mail]
transport = "smtp"
smtp_url = "smtp://127.0.0.1:$SMTP_PORT"
[mail_login]
per_address = [{ max = 1000000, window_secs = 60 }]
per_ip = [{ max = 50000000, window_secs = 60 }]   # below the global limit, as config check requires
global = [{ max = 100000000, window_secs = 60 }]
[log]
level = "warn"
TOML
[ -n "${BENCH_DATABASE_URL:-}" ] && loadtest/reset_pg.sh "$BENCH_DATABASE_URL"
until nc -z 127.0.0.1 "$SMTP_PORT" 2>/dev/null || python3 -c "import socket; socket.create_connection(('127.0.0.1',$SMTP_PORT))" 2>/dev/null; do sleep 0.1; done
AUTHGATE_CONFIG="$work/authgate.toml" taskset -c 0 ${BIN:-target/release/authgate} serve > /dev/null & pids+=($!)
until curl -sf "http://127.0.0.1:$APP_PORT/health/ready" >/dev/null; do sleep 0.05; done
base="http://127.0.0.1:$APP_PORT"
db=$(echo "${BENCH_DATABASE_URL:-sqlite}" | sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#')

echo "== send-mail-login-code-v2: ${DURATION}s, $CONNS connections ($db)"
taskset -c 1 wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s loadtest/send_code.lua "$base" | tee "$work/send.txt" | grep -E "Requests/sec|status|p50_ms"
accepted=$(awk '/^status 200:/ {print $3}' "$work/send.txt")
accepted=${accepted:-0}
deadline=$((SECONDS + 300))
while [ "$(grep -c '@bench.example' "$work/mails.txt")" -lt "$accepted" ] && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
delivered=$(grep '@bench.example' "$work/mails.txt" | cut -d' ' -f1 | sort -u | wc -l)
copies=$(grep -c '@bench.example' "$work/mails.txt")
# wrk does not count answers still in flight when it stops, so the server may
# have accepted (and mailed) a few more than "accepted".
echo "accepted $accepted, distinct recipients delivered by SMTP $delivered (mails $copies), lost $((accepted > delivered ? accepted - delivered : 0))"

echo "== sign-in-by-mail-code: $LOGINS prepared logins, $CONNS connections"
python3 loadtest/prepare_logins.py "$base" "$LOGINS" "$work/mails.txt" "$work/pairs.txt"
PAIRS="$work/pairs.txt" THREADS=2 taskset -c 1 wrk -t2 -c"$CONNS" -d"$((DURATION / 2))s" --latency -s loadtest/sign_in.lua "$base" | grep -E "Requests/sec|status|p50_ms"
echo "(a thread stops when its prepared logins are used up; many 410s would mean they ran out)"
