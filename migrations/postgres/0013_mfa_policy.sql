-- People who must use a second factor whatever `mfa.required` says
-- (`authgate user factors USER require`).
CREATE TABLE mfa_required_users (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    set_at  BIGINT NOT NULL
);
