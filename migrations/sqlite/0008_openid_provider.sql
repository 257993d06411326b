-- authgate as an OpenID Provider (issue 19).

-- How a session's person signed in, as an OpenID Connect `amr` value
-- (otp: an e-mail code; fed: a provider). Empty for older sessions.
ALTER TABLE sessions ADD COLUMN method TEXT NOT NULL DEFAULT '';

-- Signing keys for ID tokens: the private key sealed by the vault (its
-- associated data names the key id), the public half as a JWK. A key is
-- published from its creation and signs from `signs_from` (later, after a
-- rotation, so relying parties' caches see it first) until `retired_at`;
-- it stays in the JWKS until the tokens it signed have expired
-- (`published_until`).
CREATE TABLE oidc_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    alg             TEXT NOT NULL,
    private_key     BLOB NOT NULL,
    public_jwk      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    signs_from      BIGINT NOT NULL,
    retired_at      BIGINT,
    published_until BIGINT
);

-- Grants: what a client holds for a person (or for itself, with
-- client_credentials: no user). Revoking a grant ends every token issued
-- under it (a refresh token's whole family).
CREATE TABLE oidc_grants (
    id         TEXT PRIMARY KEY NOT NULL,
    client_id  TEXT NOT NULL,
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    session_id TEXT,
    scope      TEXT NOT NULL,
    auth_time  BIGINT,
    amr        TEXT NOT NULL DEFAULT '',
    nonce      TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX oidc_grants_user ON oidc_grants (user_id);
CREATE INDEX oidc_grants_expires ON oidc_grants (expires_at);

-- Authorization codes (hash only): single use; the grant they open is
-- created with them, and revoked if the code is presented a second time.
CREATE TABLE oidc_codes (
    code_hash      BLOB PRIMARY KEY NOT NULL,
    grant_id       TEXT NOT NULL REFERENCES oidc_grants (id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    redeemed_at    BIGINT
);
CREATE INDEX oidc_codes_expires ON oidc_codes (expires_at);

-- Access and refresh tokens (hash only). A used refresh token is kept
-- (`used_at`) so that presenting it again revokes its grant.
CREATE TABLE oidc_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    grant_id   TEXT NOT NULL REFERENCES oidc_grants (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX oidc_tokens_grant ON oidc_tokens (grant_id);
CREATE INDEX oidc_tokens_expires ON oidc_tokens (expires_at);
