"""A second relying party, built on Python `authlib` (not written here),
driven by authgate's tests like `tests/peers/rp/rp.mjs`: one JSON command
per line on stdin, one JSON answer per line on stdout.

The library does the protocol: the authorization URL with PKCE (S256), the
state check of the callback, the code exchange (client_secret_basic), and
the ID token's validation (signature against the JWKS, iss, aud, exp, iat,
nonce and at_hash, by authlib.oidc.core.CodeIDToken).

Commands (each with an "op"):
  discover {issuer, client_id, client_secret}
  begin    {redirect_uri, scope}              -> {url, state, verifier, nonce}
  finish   {callback, state, verifier, nonce} -> {tokens, claims, userinfo}
  refresh  {refresh_token}                    -> {tokens}
A failure answers {"error": {"name", "message", "error"}}.
"""
import json
import secrets
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken

rp = {}


def session(**kw):
    return OAuth2Session(
        rp["client_id"],
        rp["client_secret"],
        token_endpoint_auth_method="client_secret_basic",
        code_challenge_method="S256",
        **kw,
    )


def discover(cmd):
    meta = requests.get(cmd["issuer"] + "/.well-known/openid-configuration", timeout=10).json()
    if meta["issuer"] != cmd["issuer"]:
        raise ValueError("the issuer differs from the discovery URL")
    rp.update(meta=meta, client_id=cmd["client_id"], client_secret=cmd["client_secret"])
    return {"issuer": meta["issuer"]}


def begin(cmd):
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    s = session(redirect_uri=cmd["redirect_uri"], scope=cmd["scope"])
    url, state = s.create_authorization_url(
        rp["meta"]["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    rp["redirect_uri"] = cmd["redirect_uri"]
    return {"url": url, "state": state, "verifier": verifier, "nonce": nonce}


def validate_id_token(id_token, nonce, access_token):
    jwks = requests.get(rp["meta"]["jwks_uri"], timeout=10).json()
    claims = jwt.decode(
        id_token,
        JsonWebKey.import_key_set(jwks),
        claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": rp["meta"]["issuer"]}},
        claims_params={"nonce": nonce, "client_id": rp["client_id"], "access_token": access_token},
    )
    claims.validate(leeway=30)
    return dict(claims)


def finish(cmd):
    s = session(redirect_uri=rp["redirect_uri"], state=cmd["state"])
    token = s.fetch_token(
        rp["meta"]["token_endpoint"],
        authorization_response=cmd["callback"],
        code_verifier=cmd["verifier"],
    )
    claims = validate_id_token(token["id_token"], cmd["nonce"], token["access_token"])
    userinfo = s.get(rp["meta"]["userinfo_endpoint"], timeout=10)
    userinfo.raise_for_status()
    return {"tokens": dict(token), "claims": claims, "userinfo": userinfo.json()}


def refresh(cmd):
    token = session().refresh_token(
        rp["meta"]["token_endpoint"], refresh_token=cmd["refresh_token"]
    )
    return {"tokens": dict(token)}


OPS = {"discover": discover, "begin": begin, "finish": finish, "refresh": refresh}

for line in sys.stdin:
    if not line.strip():
        continue
    try:
        cmd = json.loads(line)
        answer = OPS[cmd["op"]](cmd)
    except Exception as e:  # every failure is an answer, the loop goes on
        answer = {
            "error": {
                "name": type(e).__name__,
                "message": str(e),
                "error": getattr(e, "error", None),
            }
        }
    sys.stdout.write(json.dumps(answer, default=str) + "\n")
    sys.stdout.flush()
