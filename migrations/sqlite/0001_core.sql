-- The core model (see README "Data model"). Timestamps are Unix seconds.
CREATE TABLE users (
    id           TEXT PRIMARY KEY NOT NULL,
    email        TEXT,
    -- lower-cased e-mail: addresses are unique case-insensitively
    email_norm   TEXT UNIQUE,
    display_name TEXT,
    locale       TEXT,
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE identities (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider       TEXT NOT NULL,
    issuer         TEXT NOT NULL,
    subject        TEXT NOT NULL,
    email          TEXT,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    UNIQUE (provider, issuer, subject)
);
CREATE INDEX identities_user ON identities (user_id);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    -- SHA-256 of the bearer token; the token itself is never stored
    token_hash   BLOB NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    idle_timeout BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    kind         TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE login_flows (
    state_hash    BLOB PRIMARY KEY NOT NULL,
    provider      TEXT NOT NULL,
    surface       TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    language      TEXT,
    redirect_to   TEXT,
    data          TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX login_flows_expires ON login_flows (expires_at);

CREATE TABLE mail_logins (
    token_hash        BLOB PRIMARY KEY NOT NULL,
    mail              TEXT NOT NULL,
    mail_norm         TEXT NOT NULL,
    locale            TEXT NOT NULL,
    code_hash         BLOB NOT NULL,
    attempts_left     BIGINT NOT NULL,
    device_session_id TEXT,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL
);
CREATE INDEX mail_logins_mail ON mail_logins (mail_norm);
CREATE INDEX mail_logins_expires ON mail_logins (expires_at);

CREATE TABLE provider_tokens (
    identity_id   TEXT PRIMARY KEY NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    -- ciphertext (AEAD); plaintext tokens are never stored
    access_token  BLOB NOT NULL,
    refresh_token BLOB,
    expires_at    BIGINT,
    scope         TEXT,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE rate_limits (
    key          TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_limits_expires ON rate_limits (expires_at);

CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    -- no foreign key: the history outlives a deleted user
    user_id    TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT
);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
