-- E-mail code sign-in: proofs of an address, and the durable mail outbox.
CREATE TABLE mail_auth_tokens (
    token_hash BYTEA PRIMARY KEY NOT NULL,
    mail       TEXT NOT NULL,
    locale     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX mail_auth_tokens_expires ON mail_auth_tokens (expires_at);

CREATE TABLE mail_outbox (
    id              TEXT PRIMARY KEY NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body_text       TEXT NOT NULL,
    body_html       TEXT,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    -- a worker holds the mail until then (0: free)
    leased_until    BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at);
