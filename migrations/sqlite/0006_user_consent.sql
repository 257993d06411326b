-- What a person agreed to when their account was created or changed (the
-- FreeSewing front end's consent step: profile, measurements, open data).
-- One JSON object of name -> boolean per user.
CREATE TABLE user_consents (
    user_id    TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    consent    TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
