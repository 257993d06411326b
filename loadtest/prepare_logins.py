"""Create N pending e-mail code logins through the HTTP API and pair each
login token with the code the SMTP sink received: writes "<token> <code>"
lines for sign_in.lua."""
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

base, n, mails_file, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def send(i):
    mail = f"s{i}@prep.example"
    req = urllib.request.Request(
        base + "/auth/send-mail-login-code-v2",
        data=json.dumps({"mail": mail, "locale": "en"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return mail, json.load(r)["mailLoginToken"]


with ThreadPoolExecutor(16) as pool:
    tokens = dict(pool.map(send, range(n)))

deadline = time.time() + 120
codes = {}
while len(codes) < n and time.time() < deadline:
    with open(mails_file) as f:
        for line in f:
            rcpt, _, code = line.rstrip("\n").partition(" ")
            if rcpt in tokens:
                codes[rcpt] = code
    time.sleep(0.2)
with open(out, "w") as f:
    for mail, token in tokens.items():
        if mail in codes:
            f.write(f"{token} {codes[mail]}\n")
print(f"prepared {len(codes)} of {n} logins", file=sys.stderr)
