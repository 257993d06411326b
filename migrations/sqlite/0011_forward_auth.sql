-- Forward auth: a protected host's session is handed over from an
-- authgate session (its parent) and ends with it.
ALTER TABLE sessions ADD COLUMN parent_id TEXT;
CREATE INDEX sessions_parent ON sessions (parent_id) WHERE parent_id IS NOT NULL;
