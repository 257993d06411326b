-- Hand-offs: a provider sign-in finished at authgate's own callback, its
-- outcome waiting for the client that relays the one-time code the browser
-- was sent back with (the code-exchange API's GET-started flows). Only the
-- code's hash is stored; a hand-off is taken once.
CREATE TABLE sign_in_handoffs (
    code_hash  BYTEA PRIMARY KEY NOT NULL,
    surface    TEXT NOT NULL,
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    -- why nobody was signed in (no user_id): not_registered, disabled,
    -- provider_rejected, provider_invalid, provider_unavailable
    refusal    TEXT,
    -- what the client is shown with a refusal (the provider's document)
    detail     TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sign_in_handoffs_expires ON sign_in_handoffs (expires_at);
