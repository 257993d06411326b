// A relying party built on npm `openid-client` (OpenID Certified), driven by
// authgate's tests: one JSON command per line on stdin, one JSON answer per
// line on stdout. The library does every check itself (discovery, the
// authorization response's state and iss, the ID token's signature, issuer,
// audience, nonce, expiry and auth_time); the test only reads what it says.
//
// Commands (each with an `op`):
//   discover   {name, issuer, client_id, client_secret?, key?, auth: basic|post|none|private_key_jwt}
//   keygen     {key, alg}                     -> {jwk} (the public half)
//   sign_assertion {key, client_id, aud, claims?, header?} -> {assertion}
//   begin      {name, redirect_uri, scope, params?}  -> {url, verifier, state, nonce}
//   finish     {name, callback, verifier, state, nonce, max_age?}
//                                               -> {tokens, claims, userinfo}
//   refresh    {name, refresh_token}          -> {tokens, claims}
//   userinfo   {name, access_token, sub}      -> {userinfo}
//   client_credentials {name, scope?}         -> {tokens}
//   introspect {name, token}                  -> {introspection}
//   revoke     {name, token}                  -> {revoked}
//   end_session_url {name, params}            -> {url}
//   advance_clock {seconds}  this relying party's clock moves on (as time
//                passing would: its JWKS cache ages, as authgate's test
//                clock is moved in step)
// A failure answers {error: {name, message, code, error, error_description, status}}.
import * as readline from 'node:readline';
import * as client from 'openid-client';
import * as jose from 'jose';

const configs = new Map();
// Key pairs made by `keygen`, by name: {privateKey, kid, alg}.
const keys = new Map();

// The process's clock, movable by `advance_clock` (the library reads Date.now).
const realNow = Date.now;
let offsetMs = 0;
Date.now = () => realNow() + offsetMs;

function auth(kind, secret, keyName) {
  switch (kind) {
    case 'private_key_jwt': {
      const k = keys.get(keyName);
      if (!k) throw new Error(`no key ${keyName}`);
      return client.PrivateKeyJwt({ key: k.privateKey, kid: k.kid });
    }
    case 'basic': return client.ClientSecretBasic(secret);
    case 'post': return client.ClientSecretPost(secret);
    case 'none': return client.None();
    default: throw new Error(`unknown client auth ${kind}`);
  }
}

function config(name) {
  const c = configs.get(name);
  if (!c) throw new Error(`no client ${name} discovered`);
  return c;
}

function tokensOf(t) {
  return {
    access_token: t.access_token,
    token_type: t.token_type,
    expires_in: t.expires_in,
    scope: t.scope,
    id_token: t.id_token,
    refresh_token: t.refresh_token,
  };
}

const ops = {
  async discover(cmd) {
    const c = await client.discovery(
      new URL(cmd.issuer),
      cmd.client_id,
      undefined,
      auth(cmd.auth, cmd.client_secret, cmd.key),
      { execute: [client.allowInsecureRequests] },
    );
    configs.set(cmd.name, { config: c, nonces: new Map() });
    return { metadata: c.serverMetadata() };
  },

  async begin(cmd) {
    const { config: c } = config(cmd.name);
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const params = {
      redirect_uri: cmd.redirect_uri,
      scope: cmd.scope,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
      ...(cmd.params || {}),
    };
    return { url: client.buildAuthorizationUrl(c, params).href, verifier, state, nonce };
  },

  async finish(cmd) {
    const { config: c } = config(cmd.name);
    const tokens = await client.authorizationCodeGrant(c, new URL(cmd.callback), {
      pkceCodeVerifier: cmd.verifier,
      expectedState: cmd.state,
      expectedNonce: cmd.nonce,
      idTokenExpected: true,
      ...(cmd.max_age !== undefined ? { maxAge: cmd.max_age } : {}),
    });
    const claims = tokens.claims();
    const userinfo = await client.fetchUserInfo(c, tokens.access_token, claims.sub);
    return { tokens: tokensOf(tokens), claims, userinfo };
  },

  // A resource server's check of a JWT access token (RFC 9068 4): the
  // signature by the provider's JWKS, typ at+jwt, iss, aud, exp (jose).
  async verify_access_token(cmd) {
    const { config: c } = config(cmd.name);
    const m = c.serverMetadata();
    const keys = jose.createRemoteJWKSet(new URL(m.jwks_uri));
    const { payload, protectedHeader } = await jose.jwtVerify(cmd.token, keys, {
      issuer: m.issuer,
      audience: cmd.audience,
      typ: 'at+jwt',
      requiredClaims: ['exp', 'iat', 'jti', 'sub', 'client_id'],
    });
    return { payload, header: protectedHeader };
  },

  // A relying party's check of a back-channel logout token (Back-Channel
  // Logout 2.6): signature, typ logout+jwt, iss, aud, the event, no nonce.
  async verify_logout_token(cmd) {
    const { config: c } = config(cmd.name);
    const m = c.serverMetadata();
    const keys = jose.createRemoteJWKSet(new URL(m.jwks_uri));
    const { payload, protectedHeader } = await jose.jwtVerify(cmd.token, keys, {
      issuer: m.issuer,
      audience: c.clientMetadata().client_id,
      typ: 'logout+jwt',
      requiredClaims: ['iat', 'jti', 'events'],
    });
    if (!payload.events || typeof payload.events['http://schemas.openid.net/event/backchannel-logout'] !== 'object') {
      throw new Error('no back-channel logout event');
    }
    if ('nonce' in payload) throw new Error('a logout token has no nonce');
    return { payload, header: protectedHeader };
  },

  async refresh(cmd) {
    const { config: c } = config(cmd.name);
    const tokens = await client.refreshTokenGrant(c, cmd.refresh_token);
    return { tokens: tokensOf(tokens), claims: tokens.claims() ?? null };
  },

  async userinfo(cmd) {
    const { config: c } = config(cmd.name);
    return { userinfo: await client.fetchUserInfo(c, cmd.access_token, cmd.sub) };
  },

  async introspect(cmd) {
    const { config: c } = config(cmd.name);
    return { introspection: await client.tokenIntrospection(c, cmd.token) };
  },

  async revoke(cmd) {
    const { config: c } = config(cmd.name);
    await client.tokenRevocation(c, cmd.token);
    return { revoked: true };
  },

  async end_session_url(cmd) {
    const { config: c } = config(cmd.name);
    return { url: client.buildEndSessionUrl(c, cmd.params).href };
  },

  async keygen(cmd) {
    const { publicKey, privateKey } = await jose.generateKeyPair(cmd.alg, { extractable: true });
    const jwk = await jose.exportJWK(publicKey);
    jwk.kid = cmd.key;
    jwk.alg = cmd.alg;
    keys.set(cmd.key, { privateKey, kid: cmd.key, alg: cmd.alg });
    return { jwk };
  },

  // A client assertion made by hand (to replay or spoil it): `claims`
  // complete the defaults (iss = sub = client_id, aud, a fresh jti, 60 s).
  async sign_assertion(cmd) {
    const k = keys.get(cmd.key);
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: cmd.client_id, sub: cmd.client_id, aud: cmd.aud,
      jti: crypto.randomUUID(), iat: now, exp: now + 60, ...(cmd.claims || {}),
    };
    const jwt = await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: k.alg, kid: k.kid, ...(cmd.header || {}) })
      .sign(k.privateKey);
    return { assertion: jwt };
  },

  async advance_clock(cmd) {
    offsetMs += cmd.seconds * 1000;
    return { now: Math.floor(Date.now() / 1000) };
  },

  async client_credentials(cmd) {
    const { config: c } = config(cmd.name);
    const params = cmd.scope ? { scope: cmd.scope } : {};
    return { tokens: tokensOf(await client.clientCredentialsGrant(c, params)) };
  },
};

function failure(e) {
  return {
    error: {
      name: e?.name ?? 'Error',
      message: String(e?.message ?? e),
      code: e?.code ?? null,
      error: e?.error ?? null,
      error_description: e?.error_description ?? null,
      status: e?.status ?? null,
    },
  };
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let answer;
  try {
    const cmd = JSON.parse(line);
    const op = ops[cmd.op];
    if (!op) throw new Error(`unknown op ${cmd.op}`);
    answer = await op(cmd);
  } catch (e) {
    answer = failure(e);
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
