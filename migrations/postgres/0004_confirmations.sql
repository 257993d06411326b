-- One-time confirmations: a provider sign-in finished in the browser hands
-- the front end a confirmation id (and validation), which it trades once for
-- a session. Only hashes are stored.
CREATE TABLE confirmations (
    token_hash      BYTEA PRIMARY KEY NOT NULL,
    validation_hash BYTEA,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    surface         TEXT NOT NULL,
    signup          BOOLEAN NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX confirmations_expires ON confirmations (expires_at);
