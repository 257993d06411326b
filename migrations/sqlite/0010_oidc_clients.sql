-- OpenID Provider clients registered with `authgate client add` (the
-- config's [clients.*] are not stored): settings as JSON, the secret as
-- SHA-256 (256 random bits; shown once, when made).
CREATE TABLE oidc_clients (
    id          TEXT PRIMARY KEY NOT NULL,
    secret_hash BLOB,
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
