#!/usr/bin/env python3
"""Seed an authgate database (already migrated: an SQLite file, or a
PostgreSQL URL, written with psql's COPY) with USERS users, each with a
Microsoft identity, and SESSIONS live sessions spread over them.
Tokens are derived from their index (base64url of SHA-256("bench-<i>"), 43
characters, the shape authgate mints); only their SHA-256 is stored, as
authgate does. A random sample of SAMPLE sessions are the active ones (seen in
the last ten minutes; their tokens are written to OUT for wrk); the others were
last seen one to twenty-three hours ago, as on a server whose users come and go.

    seed_sessions.py DB_PATH_OR_POSTGRES_URL SESSIONS OUT [USERS] [SAMPLE]
"""
import base64, csv, hashlib, random, sqlite3, subprocess, sys, time, uuid

db, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
users = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
sample = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
now = int(time.time())

USERS = "users (id, email, email_norm, display_name, locale, disabled, created_at, updated_at)"
IDENTITIES = "identities (id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at)"
SESSIONS = "sessions (id, token_hash, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind)"


def token(i):
    return base64.urlsafe_b64encode(hashlib.sha256(f"bench-{i}".encode()).digest()).decode().rstrip("=")


uids = [str(uuid.uuid4()) for _ in range(users)]
user_rows = [(u, f"user{k}@bench.example", f"user{k}@bench.example", f"User {k}", "en", False, now, now)
             for k, u in enumerate(uids)]
identity_rows = [(str(uuid.uuid4()), u, "microsoft", "bench-tenant", f"oid-{k}", f"user{k}@bench.example", True, now, now)
                 for k, u in enumerate(uids)]
active = set(random.sample(range(n), min(sample, n)))
rng = random.Random(7)


def session_rows():
    for i in range(n):
        h = hashlib.sha256(token(i).encode()).digest()
        seen = now - (rng.randrange(600) if i in active else rng.randrange(3600, 23 * 3600))
        yield (str(uuid.uuid4()), h, uids[i % users], seen - 60, seen, 86400 * 30, now + 86400 * 30, "127.0.0.1", "bench", "cookie")


def placeholders(table):
    return ",".join("?" * (table.count(",") + 1))


if db.startswith("postgres://") or db.startswith("postgresql://"):
    def copy(table, rows):
        p = subprocess.Popen(["psql", db, "-v", "ON_ERROR_STOP=1", "-qc", f"\\copy {table} FROM STDIN WITH (FORMAT csv)"],
                             stdin=subprocess.PIPE, text=True)
        w = csv.writer(p.stdin)
        for r in rows:
            w.writerow(["\\x" + v.hex() if isinstance(v, bytes) else ("t" if v is True else "f" if v is False else v) for v in r])
        p.stdin.close()
        if p.wait() != 0:
            sys.exit(f"psql COPY into {table} failed")
    copy(USERS, user_rows)
    copy(IDENTITIES, identity_rows)
    copy(SESSIONS, session_rows())
    # Statistics, hint bits and the checkpoint the load calls for, now:
    # not in the background of the measurement.
    subprocess.run(["psql", db, "-qc", "VACUUM ANALYZE", "-c", "CHECKPOINT"], check=True)
else:
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.executemany(f"INSERT INTO {USERS} VALUES ({placeholders(USERS)})", user_rows)
    con.executemany(f"INSERT INTO {IDENTITIES} VALUES ({placeholders(IDENTITIES)})", identity_rows)
    batch, rows = 50000, []
    for r in session_rows():
        rows.append(r)
        if len(rows) == batch:
            con.executemany(f"INSERT INTO {SESSIONS} VALUES ({placeholders(SESSIONS)})", rows)
            con.commit()
            rows = []
    con.executemany(f"INSERT INTO {SESSIONS} VALUES ({placeholders(SESSIONS)})", rows)
    con.commit()
    con.close()

with open(out, "w") as f:
    for i in sorted(active, key=lambda _: random.random()):
        f.write(token(i) + "\n")
