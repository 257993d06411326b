#!/usr/bin/env python3
"""Seed an authgate SQLite database (already migrated) with USERS users, each
with a Microsoft identity, and SESSIONS live sessions spread over them.
Tokens are derived from their index (base64url of SHA-256("bench-<i>"), 43
characters, the shape authgate mints); only their SHA-256 is stored, as
authgate does. A random sample of SAMPLE sessions are the active ones (seen in
the last ten minutes; their tokens are written to OUT for wrk); the others were
last seen one to twenty-three hours ago, as on a server whose users come and go.

    seed_sessions.py DB_PATH SESSIONS OUT [USERS] [SAMPLE]
"""
import base64, hashlib, random, sqlite3, sys, time, uuid

db, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
users = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
sample = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
now = int(time.time())

def token(i):
    return base64.urlsafe_b64encode(hashlib.sha256(f"bench-{i}".encode()).digest()).decode().rstrip("=")

con = sqlite3.connect(db)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=OFF")
uids = [str(uuid.uuid4()) for _ in range(users)]
con.executemany(
    "INSERT INTO users (id, email, email_norm, display_name, locale, disabled, created_at, updated_at) VALUES (?,?,?,?,?,0,?,?)",
    [(u, f"user{k}@bench.example", f"user{k}@bench.example", f"User {k}", "en", now, now) for k, u in enumerate(uids)])
con.executemany(
    "INSERT INTO identities (id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at) VALUES (?,?,?,?,?,?,1,?,?)",
    [(str(uuid.uuid4()), u, "microsoft", "bench-tenant", f"oid-{k}", f"user{k}@bench.example", now, now) for k, u in enumerate(uids)])
active = set(random.sample(range(n), min(sample, n)))
rng = random.Random(7)
batch = 50000
for start in range(0, n, batch):
    rows = []
    for i in range(start, min(n, start + batch)):
        h = hashlib.sha256(token(i).encode()).digest()
        seen = now - (rng.randrange(600) if i in active else rng.randrange(3600, 23 * 3600))
        rows.append((str(uuid.uuid4()), h, uids[i % users], seen - 60, seen, 86400 * 30, now + 86400 * 30, "127.0.0.1", "bench", "cookie"))
    con.executemany(
        "INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind) VALUES (?,?,?,?,?,?,?,?,?,?)",
        rows)
    con.commit()
con.commit()
con.close()
with open(out, "w") as f:
    for i in sorted(active, key=lambda _: random.random()):
        f.write(token(i) + "\n")
