-- OpenID Provider clients registered with `authgate client add` (the
-- config's [clients.*] are not stored): settings as JSON, the secret as
-- SHA-256 (256 random bits; shown once, when made).
CREATE TABLE oidc_clients (
    id          TEXT PRIMARY KEY NOT NULL,
    secret_hash BYTEA,
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- What a person let a third-party client have: the scopes, space
-- separated. Asked again when the client wants more.
CREATE TABLE oidc_consents (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- Back-channel logout: when the session a grant was made in has ended, a
-- logout token is posted to the client (if it registered a URI), once:
-- `logout_sent_at` claims the grant for that, across instances.
ALTER TABLE oidc_grants ADD COLUMN logout_sent_at BIGINT;
CREATE INDEX oidc_grants_logout_pending ON oidc_grants (client_id)
    WHERE logout_sent_at IS NULL AND session_id IS NOT NULL;
