-- TOTP second factors (RFC 6238): the secret sealed by the vault; the last
-- time step taken (a code is taken once); wrong-code counting with back-off.
CREATE TABLE totp_factors (
    user_id      TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret       BLOB NOT NULL,
    confirmed_at BIGINT,
    last_step    BIGINT NOT NULL DEFAULT 0,
    attempts     BIGINT NOT NULL DEFAULT 0,
    lockouts     BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);

-- Single-use recovery codes: SHA-256 only, shown once when made.
CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);
