-- private_key_jwt client assertions seen (RFC 7523): SHA-256 of the client
-- id and the assertion's jti, kept until the assertion expires, so that an
-- assertion works once.
CREATE TABLE oidc_assertions (
    jti_hash   BLOB PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oidc_assertions_expires ON oidc_assertions (expires_at);
