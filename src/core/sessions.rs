//! Sessions: opaque bearer ids (at least 128 random bits), stored only as
//! SHA-256; idle and absolute lifetimes; revocable one by one or all of a
//! user's; a new id on every sign-in.
use serde_json::json;
use uuid::Uuid;

use super::secret::{self, MAX_TOKEN_LEN, TokenFormat};
use super::{ClientMeta, Core, Error, Session, User};

/// Lifetimes from `[session]` in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Seconds without a request after which a session ends.
    pub idle_timeout: i64,
    /// Seconds after sign-in after which a session ends regardless.
    pub absolute_timeout: i64,
    /// `last_seen_at` is written at most this often per session, so a busy
    /// session does not cost a database write on every request.
    pub touch_interval: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_timeout: 24 * 3600,
            absolute_timeout: 7 * 24 * 3600,
            touch_interval: 60,
        }
    }
}

/// A session that checked out, with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCheck {
    pub session: Session,
    pub user: User,
}

impl Core {
    /// Start a new session for a user (a sign-in). Always a fresh id: a
    /// session id is never reused or carried over (no fixation). Returns the
    /// bearer token, which exists only in this return value and the client.
    pub async fn sign_in(
        &self,
        user: &User,
        kind: &str,
        format: TokenFormat,
        meta: &ClientMeta,
    ) -> Result<(String, Session), Error> {
        if user.disabled {
            self.audit(
                "signin.refused",
                Some(user.id),
                meta,
                Some(json!({ "reason": "disabled", "kind": kind })),
            )
            .await;
            return Err(Error::Disabled);
        }
        let policy = self.session_policy();
        let now = self.now();
        let token = secret::new_token(format)?;
        let session = Session {
            id: Uuid::now_v7(),
            user_id: user.id,
            created_at: now,
            last_seen_at: now,
            idle_timeout: policy.idle_timeout,
            expires_at: now.saturating_add(policy.absolute_timeout),
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone().map(|ua| truncate(ua, 512)),
            kind: kind.to_string(),
        };
        self.store()
            .insert_session(&session, &secret::hash_token(&token))
            .await?;
        self.audit(
            "session.created",
            Some(user.id),
            meta,
            Some(json!({ "session": session.id, "kind": kind })),
        )
        .await;
        Ok((token, session))
    }

    /// Check a presented session token. `None` for anything that is not a
    /// live session of an enabled user; an expired session is removed.
    pub async fn check_session(&self, token: &str) -> Result<Option<SessionCheck>, Error> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let hash = secret::hash_token(token);
        let Some((session, user)) = self.store().session_by_token_hash(&hash).await? else {
            return Ok(None);
        };
        let now = self.now();
        if now >= session.ends_at() {
            self.store().delete_session(session.id).await?;
            return Ok(None);
        }
        if user.disabled {
            return Ok(None);
        }
        let mut session = session;
        if now - session.last_seen_at >= self.session_policy().touch_interval {
            self.store().touch_session(session.id, now).await?;
            session.last_seen_at = now;
        }
        Ok(Some(SessionCheck { session, user }))
    }

    /// Sign out: end the session a token names. `false` if there was none.
    pub async fn revoke_session_token(
        &self,
        token: &str,
        meta: &ClientMeta,
    ) -> Result<bool, Error> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(false);
        }
        match self
            .store()
            .delete_session_by_token_hash(&secret::hash_token(token))
            .await?
        {
            Some(s) => {
                self.audit(
                    "session.revoked",
                    Some(s.user_id),
                    meta,
                    Some(json!({ "session": s.id })),
                )
                .await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// End one session by its public id (operators, the CLI).
    pub async fn revoke_session(&self, id: Uuid, meta: &ClientMeta) -> Result<(), Error> {
        if !self.store().delete_session(id).await? {
            return Err(Error::NotFound);
        }
        self.audit(
            "session.revoked",
            None,
            meta,
            Some(json!({ "session": id })),
        )
        .await;
        Ok(())
    }

    /// End every session of a user. Returns how many ended.
    pub async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        meta: &ClientMeta,
    ) -> Result<u64, Error> {
        let n = self.store().delete_user_sessions(user_id).await?;
        self.audit(
            "session.revoked_all",
            Some(user_id),
            meta,
            Some(json!({ "count": n })),
        )
        .await;
        Ok(n)
    }

    /// Live sessions, newest first, of one user or of everyone.
    pub async fn list_sessions(
        &self,
        user_id: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Session>, Error> {
        Ok(self
            .store()
            .list_sessions(user_id, self.now(), limit)
            .await?)
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
