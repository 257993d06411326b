// A real OpenID provider for authgate's tests: the npm package
// `oidc-provider` (OpenID Certified), configured from one JSON argument.
//
//   node provider.mjs '{"port": 0, "issuer": "...", "prefixes": ["/tid"],
//                       "microsoft": true, "clients": [...], "accounts": {...}}'
//
// - issuer: the `iss` of its tokens. For an Entra-like tenant it is
//   http://127.0.0.1:<port>/<tenant id>/v2.0 and `microsoft` puts the
//   endpoints where Entra has them (/<tenant>/oauth2/v2.0/authorize, ...).
// - prefixes: path prefixes (tenant segments such as /<tid>, /common,
//   /organizations) that are all served by this one provider.
// - accounts: account id -> claims; the login form accepts any password.
// Prints "listening <port>" once it accepts connections.
import http from 'node:http';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const cfg = JSON.parse(process.argv[2]);

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid: 'peer-key-1', alg: 'RS256', use: 'sig' };

const routes = cfg.microsoft
  ? {
      authorization: '/oauth2/v2.0/authorize',
      token: '/oauth2/v2.0/token',
      jwks: '/discovery/v2.0/keys',
      userinfo: '/oidc/userinfo',
    }
  : {};

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients.map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
    ...c,
  })),
  jwks: { keys: [jwk] },
  routes,
  // tid/oid as Entra puts them in its ID tokens; scope claims in the ID
  // token too (as Google and Entra do).
  claims: {
    openid: ['sub', 'tid', 'oid'],
    email: ['email', 'email_verified', 'xms_edov'],
    profile: ['name', 'preferred_username'],
  },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  // A refresh token for every client allowed the grant (Entra hands one out
  // for offline_access; here regardless of the consent prompt).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  cookies: { keys: ['authgate-test-peer'] },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const claims = cfg.accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});

const prefixes = cfg.prefixes || [];
const handle = provider.callback();
const server = http.createServer((req, res) => {
  req.originalUrl = req.url;
  for (const p of prefixes) {
    if (req.url.startsWith(`${p}/`)) {
      req.url = req.url.slice(p.length);
      break;
    }
  }
  handle(req, res);
});
server.listen(cfg.port || 0, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
